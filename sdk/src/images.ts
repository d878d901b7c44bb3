/**
 * Turns an image file (path, Node only), bytes or a Blob into the `image` input of the vision
 * services: a `data:image/…;base64,` string. URLs (`https://…`) and `upload:<id>` pass through.
 */
export async function imageToInput(image: string | Uint8Array | ArrayBuffer | Blob): Promise<string> {
  if (typeof image === 'string') {
    if (/^(https:\/\/|upload:|data:)/.test(image)) return image;
    const fs = await import('node:fs/promises');
    image = new Uint8Array(await fs.readFile(image));
  } else if (typeof Blob !== 'undefined' && image instanceof Blob) {
    image = new Uint8Array(await image.arrayBuffer());
  } else if (image instanceof ArrayBuffer) {
    image = new Uint8Array(image);
  }
  const bytes = image as Uint8Array;
  return `data:${sniffImageType(bytes)};base64,${toBase64(bytes)}`;
}

function sniffImageType(b: Uint8Array): string {
  if (b[0] === 0xff && b[1] === 0xd8) return 'image/jpeg';
  if (b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) return 'image/png';
  if (b[0] === 0x52 && b[1] === 0x49 && b[2] === 0x46 && b[3] === 0x46 && b[8] === 0x57 && b[9] === 0x45) return 'image/webp';
  return 'application/octet-stream';
}

function toBase64(bytes: Uint8Array): string {
  const B = (globalThis as { Buffer?: { from(b: Uint8Array): { toString(enc: string): string } } }).Buffer;
  if (B) return B.from(bytes).toString('base64');
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}
