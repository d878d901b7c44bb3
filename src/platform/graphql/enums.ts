/** A GraphQL enum object from a list of string literals, so entities and the schema share one list. */
export const enumOf = <T extends string>(values: readonly T[]) => Object.fromEntries(values.map((v) => [v, v])) as { [K in T]: K };
