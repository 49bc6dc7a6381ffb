// A connect deadline that stops counting while rbee waits for a person (a host key to accept, a
// passphrase to type): only the machine's time counts against ConnectTimeout.

/** A timeout that can be paused while we wait for a person. */
export class Deadline {
  private timer?: NodeJS.Timeout;
  private remaining: number;
  private startedAt = 0;
  private done = false;

  constructor(
    ms: number,
    private readonly onExpire: () => void,
  ) {
    this.remaining = ms;
    this.resume();
  }
  pause(): void {
    if (!this.timer) return;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.remaining -= Date.now() - this.startedAt;
  }
  resume(): void {
    if (this.done || this.timer) return;
    this.startedAt = Date.now();
    this.timer = setTimeout(
      () => {
        this.done = true;
        this.onExpire();
      },
      Math.max(0, this.remaining),
    );
  }
  clear(): void {
    this.done = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
