import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Signed upload URLs: the signature is an HMAC of the upload id and its expiry under a key derived
 * from JWT_SECRET (never the secret itself), so only this deployment can mint them, and changing
 * either query parameter invalidates the URL.
 */
export class UploadSigner {
  private readonly key: Buffer;

  constructor(jwtSecret: string) {
    this.key = createHmac('sha256', jwtSecret).update('nimbus:upload-url:v1').digest();
  }

  sign(uploadId: string, expiresUnix: number): string {
    return createHmac('sha256', this.key).update(`${uploadId}.${expiresUnix}`).digest('hex');
  }

  verify(uploadId: string, expiresUnix: number, sig: string): boolean {
    if (!/^[0-9a-f]{64}$/.test(sig) || !Number.isSafeInteger(expiresUnix)) return false;
    return timingSafeEqual(Buffer.from(this.sign(uploadId, expiresUnix), 'hex'), Buffer.from(sig, 'hex'));
  }
}
