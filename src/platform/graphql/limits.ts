/** Largest request body (JSON; vision images come base64 in it) and WebSocket message. */
export const MAX_BODY_BYTES = 12 * 1024 * 1024;

/**
 * Parsing of a GraphQL document stops past this many tokens (QUERY_TOO_COSTLY): a document is
 * parsed and validated before its cost is known, so without it one request of 100,000 aliases
 * holds the event loop for seconds (or overflows the depth rule's stack). Every operation of the
 * contract together has under 1,000.
 */
export const MAX_DOCUMENT_TOKENS = 5_000;

/**
 * What the depth rule and the parser (past MAX_DOCUMENT_TOKENS) say when they refuse a document
 * that is too costly to run: those refusals are QUERY_TOO_COSTLY, other parse or validation errors
 * BAD_USER_INPUT. (graphql-js writes "more that" in its token message.)
 */
export const TOO_COSTLY_MESSAGE = /exceeds maximum operation depth|Document contains more tha[nt] \d+ tokens/;
