// Runs the real CLI (node bin/scalple.js) as an operator would, and headless Chromium for the
// report's screenshot and PDF checks.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { inflateSync } from 'node:zlib';

export const BIN = path.resolve(import.meta.dirname, '../../bin/scalple.js');

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

export function scalple(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
    if (!env.SCALPLE_CONFIG) delete childEnv.SCALPLE_CONFIG;
    execFile(process.execPath, [BIN, ...args], { env: childEnv, timeout: 60_000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      // oidc-provider (loaded by `scalple demo`) prints a Node 22 notice under Node 20: not ours.
      resolve({ code, stdout, stderr: stderr.replace(/^oidc-provider WARNING: Unsupported runtime.*\n/m, '') });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Headless Chromium (Debian package `chromium`).

export function chromiumPath(): string {
  const found = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
  if (!found) {
    throw new Error('Chromium is not installed, so the HTML report cannot be checked: apt-get install chromium (Debian package `chromium`; .ci/run and npm test install it).');
  }
  return found;
}

/** Runs headless Chromium on a file with the given extra flags (--screenshot=…, --print-to-pdf=…). */
export function chromium(extra: string[], file: string): Promise<Run> {
  const bin = chromiumPath();
  const profile = mkdtempSync(path.join(os.tmpdir(), 'scalple-chromium-'));
  const args = [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-extensions', '--disable-dev-shm-usage', '--hide-scrollbars',
    `--user-data-dir=${profile}`, ...extra, `file://${file}`,
  ];
  return new Promise((resolve) => {
    execFile(bin, args, { timeout: 90_000, env: { ...process.env, HOME: profile } }, (err, stdout, stderr) => {
      rmSync(profile, { recursive: true, force: true });
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

export interface DecodedPng {
  width: number;
  height: number;
  /** RGBA, 4 bytes per pixel. */
  pixels: Buffer;
}

/** A minimal PNG decoder (8-bit greyscale, RGB or RGBA, not interlaced): enough for screenshots. */
export function decodePng(file: string): DecodedPng {
  const buf = readFileSync(file);
  if (!buf.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) throw new Error(`${file} is not a PNG`);
  let off = 8;
  let width = 0;
  let height = 0;
  let colorType = 0;
  const idat: Buffer[] = [];
  while (off < buf.length) {
    const len = buf.readUInt32BE(off);
    const type = buf.toString('latin1', off + 4, off + 8);
    const data = buf.subarray(off + 8, off + 8 + len);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      const depth = data[8];
      colorType = data[9]!;
      if (depth !== 8 || data[12] !== 0 || ![0, 2, 6].includes(colorType)) throw new Error(`unsupported PNG (depth ${depth}, colour type ${colorType}, interlace ${data[12]})`);
    } else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') break;
    off += 12 + len;
  }
  const channels = colorType === 6 ? 4 : colorType === 2 ? 3 : 1;
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const out = Buffer.alloc(width * height * 4);
  let prev = Buffer.alloc(stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)]!;
    const line = Buffer.from(raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1)));
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? line[x - channels]! : 0;
      const b = prev[x]!;
      const c = x >= channels ? prev[x - channels]! : 0;
      let v = line[x]!;
      if (filter === 1) v += a;
      else if (filter === 2) v += b;
      else if (filter === 3) v += (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c;
        const pa = Math.abs(p - a);
        const pb = Math.abs(p - b);
        const pc = Math.abs(p - c);
        v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      line[x] = v & 0xff;
    }
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 4;
      if (channels === 1) out.fill(line[x]!, o, o + 3);
      else line.copy(out, o, x * channels, x * channels + 3);
      out[o + 3] = channels === 4 ? line[x * 4 + 3]! : 255;
    }
    prev = line;
  }
  return { width, height, pixels: out };
}

export interface PngStats {
  distinctColours: number;
  /** Share of pixels that are not (near) white. */
  inked: number;
  /** Share of pixels that are dark (text). */
  dark: number;
}

export function pngStats(png: DecodedPng): PngStats {
  const colours = new Set<number>();
  let inked = 0;
  let dark = 0;
  const n = png.width * png.height;
  for (let i = 0; i < n; i++) {
    const r = png.pixels[i * 4]!;
    const g = png.pixels[i * 4 + 1]!;
    const b = png.pixels[i * 4 + 2]!;
    if (colours.size < 100_000) colours.add((r << 16) | (g << 8) | b);
    const lum = 0.299 * r + 0.587 * g + 0.114 * b;
    if (lum < 245) inked++;
    if (lum < 100) dark++;
  }
  return { distinctColours: colours.size, inked: inked / n, dark: dark / n };
}
