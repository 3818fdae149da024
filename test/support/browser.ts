import { type Browser, chromium } from 'playwright-core'

/** Headless Chromium from Debian (`CHROMIUM_PATH` to use another), quiet: no first-run or background traffic. */
export function launchChromium(extraArgs: string[] = []): Promise<Browser> {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      ...extraArgs,
    ],
  })
}
