export { main, type MainIO } from "./main.js";
export { validateAll } from "./check.js";
export { startEmbedded, type Embedded, type EmbeddedOptions } from "./embedded.js";
export { startFunctionHost, type FunctionContext, type FunctionHandler, type FunctionHost } from "./functions.js";
export { clusterSinkUrl, startSingle, type Single, type SingleOptions } from "./single.js";
