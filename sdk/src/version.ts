/** The SDK's version (kept equal to package.json's by test/sdk/documents.test.ts). */
export const SDK_VERSION = '0.1.0';
