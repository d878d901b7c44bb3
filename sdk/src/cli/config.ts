import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';

/** What `nimbus login` stores: the API's base URL and a credential (an API key or a user JWT). */
export interface CliConfig {
  baseUrl?: string;
  apiKey?: string;
  /** 'apiKey' or 'jwt' (from --email/--password; it expires, log in again then). */
  credential?: 'apiKey' | 'jwt';
  email?: string;
}

/** NIMBUS_CONFIG, else $XDG_CONFIG_HOME/nimbus/config.json, else ~/.config/nimbus/config.json. */
export function configPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.NIMBUS_CONFIG) return env.NIMBUS_CONFIG;
  return join(env.XDG_CONFIG_HOME || join(homedir(), '.config'), 'nimbus', 'config.json');
}

export async function readConfig(path: string): Promise<CliConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw err;
  }
  try {
    const parsed = JSON.parse(text) as unknown;
    return parsed && typeof parsed === 'object' ? (parsed as CliConfig) : {};
  } catch {
    throw new Error(`${path} is not valid JSON; fix or delete it`);
  }
}

/** Writes the file readable by its owner only (mode 600, folder 700), atomically. */
export async function writeConfig(path: string, config: CliConfig): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  await chmod(tmp, 0o600);
  await rename(tmp, path);
}
