// matrix-js-sdk 43 declares Node >= 22 and calls Promise.withResolvers
// (ES2024), which Node 20 lacks. This module must be evaluated before the SDK
// runs any code; lib/sdk.js imports it first, so tests import the SDK from
// there. On Node >= 22 it does nothing.
if (typeof Promise.withResolvers !== "function") {
  Object.defineProperty(Promise, "withResolvers", {
    configurable: true,
    writable: true,
    enumerable: false,
    value: function withResolvers() {
      let resolve;
      let reject;
      const promise = new this((res, rej) => {
        resolve = res;
        reject = rej;
      });
      return { promise, resolve, reject };
    },
  });
}
