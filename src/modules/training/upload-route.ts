import type { Request, RequestHandler, Response } from 'express';
import type { DatasetsService } from './datasets.service';
import { UploadHttpError } from './datasets.service';

/**
 * `PUT /uploads/:id?expires=…&sig=…`: the signed upload URL createDataset returns. The URL is the
 * credential (no Authorization header); the body streams into the artifact store, never through
 * GraphQL or a JSON parser. Answers JSON: 200 { uploadId, bytes } or { error: { code, message } }.
 */
export function uploadHandler(datasets: () => DatasetsService): RequestHandler {
  return async (req: Request, res: Response) => {
    try {
      const id = String(req.params.id);
      const { bytes } = await datasets().receiveUpload({
        id, expires: req.query.expires, sig: req.query.sig, contentType: req.header('content-type'),
        contentLength: req.header('content-length'), body: req,
      });
      res.status(200).json({ uploadId: id, bytes });
    } catch (err) {
      const e = err instanceof UploadHttpError ? err : new UploadHttpError(500, 'INTERNAL', 'The upload failed');
      // Stop reading a body we refuse (a too-large one in particular).
      if (!req.readableEnded) res.setHeader('connection', 'close');
      res.status(e.status).json({ error: { code: e.code, message: e.message } });
      if (!req.readableEnded) res.once('finish', () => req.destroy());
    }
  };
}
