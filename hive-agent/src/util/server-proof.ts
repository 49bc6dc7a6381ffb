// TCP fallback (nodes without Unix sockets): before a client sends its bearer token or anything else
// on a connection, the server on the other end proves it holds the same key. Whoever took a freed
// loopback port cannot answer, and learns nothing but a random nonce.

import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { connect, type Socket } from "node:net";
import { HELLO_PATH, RbeeError, SERVER_CHALLENGE_HEADER, SERVER_PROOF_HEADER } from "../protocol";

/** The proof a server holding `key` gives for `nonce`. */
export function serverProof(key: string, nonce: string): string {
  return createHmac("sha256", key).update(nonce).digest("base64url");
}

/**
 * A TCP connection to 127.0.0.1:`port` whose server has proven it holds `key`, ready for HTTP/1.1
 * requests. Fails with INVALID_API_KEY (the server is not who it should be) or a connection error.
 */
export function provenSocket(
  port: number,
  key: string,
  timeoutMs: number,
  headers: Record<string, string> = {},
): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const nonce = randomBytes(24).toString("base64url");
    const sock = connect({ host: "127.0.0.1", port });
    let head = "";
    const fail = (e: Error) => {
      sock.destroy();
      reject(e);
    };
    const timer = setTimeout(
      () =>
        fail(
          Object.assign(new Error(`no server proof from 127.0.0.1:${port} within ${timeoutMs} ms`), {
            code: "UND_ERR_CONNECT_TIMEOUT",
          }),
        ),
      timeoutMs,
    );
    const onData = (d: Buffer) => {
      head += d.toString("latin1");
      if (head.length > 8192)
        return fail(
          new RbeeError(
            "INVALID_API_KEY",
            `127.0.0.1:${port} answered the server check with garbage; it is not an rbee hive or worker`,
          ),
        );
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      clearTimeout(timer);
      sock.off("data", onData);
      sock.off("error", fail);
      const lines = head.slice(0, end).split("\r\n");
      const proof =
        lines
          .find((l) => l.toLowerCase().startsWith(`${SERVER_PROOF_HEADER}:`))
          ?.slice(SERVER_PROOF_HEADER.length + 1)
          .trim() ?? "";
      const want = Buffer.from(serverProof(key, nonce));
      const got = Buffer.from(proof);
      if (
        !/^HTTP\/1\.1 204 /.test(lines[0]) ||
        end + 4 !== head.length ||
        got.length !== want.length ||
        !timingSafeEqual(got, want)
      )
        return fail(
          new RbeeError(
            "INVALID_API_KEY",
            `the process on 127.0.0.1:${port} could not prove it is the rbee server there (another program may have taken the port); nothing was sent to it`,
          ),
        );
      resolve(sock);
    };
    sock.on("data", onData);
    sock.once("error", fail);
    const extra = Object.entries(headers)
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join("");
    sock.once("connect", () =>
      sock.write(
        `GET ${HELLO_PATH} HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\n${SERVER_CHALLENGE_HEADER}: ${nonce}\r\n${extra}\r\n`,
      ),
    );
  });
}
