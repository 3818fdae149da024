import type { FastifyReply } from 'fastify'
import { type ErrorCode, errorBody, errorStatus } from '../errors.js'
import type { Exchange } from '../pipeline/exchange.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** The request's exchange: all the gateway's state for it, made when its first hook runs. */
    exchange: Exchange | null
  }
}

/**
 * The one place a refusal becomes a response: the JSON error body with the status of its code, and
 * the code and policy rule recorded on the exchange for the access log and metrics.
 */
export function refuse(reply: FastifyReply, code: ErrorCode, rule: string, message?: string): FastifyReply {
  reply.request.exchange?.refuse(code, rule, message)
  return reply
    .code(errorStatus(code))
    .type('application/json; charset=utf-8')
    .send(errorBody(code, reply.request.id, message))
}
