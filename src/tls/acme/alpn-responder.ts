import { createServer, type Server } from 'node:tls'
import type { Logger } from 'pino'
import type { AcmeManager } from './manager.js'

/**
 * Answers ACME TLS-ALPN-01 validations (RFC 8737): the CA connects to port 443 offering only ALPN
 * `acme-tls/1` and expects the challenge certificate for the name it sends, then hangs up. The HTTPS
 * listener's front door hands such connections here; no HTTP is ever spoken on them.
 */
export function acmeTlsAlpnResponder(manager: AcmeManager, log: Logger): Server {
  const server = createServer(
    {
      ALPNProtocols: ['acme-tls/1'],
      SNICallback: (servername, done) => {
        manager.alpnChallenge(servername).then(
          (context) =>
            context
              ? done(null, context)
              : done(new Error(`no TLS-ALPN-01 challenge is pending for ${servername}`)),
          (error: Error) => done(error),
        )
      },
    },
    (socket) => socket.end(),
  )
  server.on('tlsClientError', (error, socket) => {
    log.info({ err: error, peer: socket.remoteAddress }, 'ACME TLS-ALPN-01 handshake refused')
    socket.destroy()
  })
  return server
}
