// GraphQL Code Generator: typed documents (client preset) for the SDK's operations in
// src/operations, against the server's committed schema. `npm run sdk:generate` writes
// src/generated/; `npm run sdk:check` regenerates into a temporary folder and compares.
const path = require('node:path');

const out = process.env.NIMBUS_SDK_CODEGEN_OUT ?? path.join(__dirname, 'src/generated');

/** @type {import('@graphql-codegen/cli').CodegenConfig} */
module.exports = {
  schema: path.join(__dirname, '../schema/schema.graphql'),
  documents: [path.join(__dirname, 'src/operations/*.graphql')],
  ignoreNoDocuments: false,
  emitLegacyCommonJSImports: true,
  silent: true,
  generates: {
    [out + '/']: {
      preset: 'client',
      presetConfig: { fragmentMasking: false, gqlTagName: 'graphql' },
      config: {
        // Documents are typed strings: no runtime dependency on `graphql` to print them.
        documentMode: 'string',
        enumsAsTypes: true,
        useTypeImports: true,
        avoidOptionals: { field: true, inputValue: false, object: true, defaultValue: false },
        scalars: { DateTime: 'string', JSON: 'unknown' },
        strictScalars: true,
        skipTypename: false,
        nonOptionalTypename: false,
        dedupeFragments: true,
      },
    },
  },
};
