// The SDK as the tests use it: the polyfill is evaluated first (ES modules run
// their imports in order), then matrix-js-sdk, with its logger turned down so
// that test output stays readable (INTEROP_SDK_LOG=debug brings it back).
import "./polyfill.js";
import { logger } from "matrix-js-sdk/lib/logger.js";

logger.setLevel(process.env.INTEROP_SDK_LOG || "silent", false);

export * from "matrix-js-sdk";
