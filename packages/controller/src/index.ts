// The Kubernetes controller: renders and reconciles what the four kinds need on a cluster.
export { CONTROLLER_PACKAGE } from "./version.js";
