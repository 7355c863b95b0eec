export { main, type MainIO } from "./main.js";
export { startEmbedded, validateAll, type Embedded, type EmbeddedOptions } from "./embedded.js";
export { startFunctionHost, type FunctionContext, type FunctionHandler, type FunctionHost } from "./functions.js";
