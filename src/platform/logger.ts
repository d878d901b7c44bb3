import pino, { type Logger } from 'pino';

/** JSON logs; credentials are redacted wherever they appear in a logged object. */
export function createLogger(level: string, name = 'nimbus'): Logger {
  return pino({
    name,
    level,
    redact: {
      paths: [
        'authorization', '*.authorization', 'headers.authorization', 'req.headers.authorization',
        'password', '*.password', 'token', '*.token', 'secret', '*.secret', 'apiKey', '*.apiKey',
        'connectionParams.authorization', 'variables.password', 'variables.input.password',
      ],
      censor: '[redacted]',
    },
  });
}
