/** The package name, for labels and field managers. */
export const CONTROLLER_PACKAGE = "@ofevents/controller";
