import dns2 from 'dns2'

const { Packet } = dns2
type Answer = InstanceType<typeof Packet>['answers'][number]

/** dns2's types describe decoded records; its encoder takes plain ones, as its README shows. */
function answer(fields: Record<string, unknown>): Answer {
  return fields as unknown as Answer
}

export interface Zone {
  /** A and AAAA records: name → addresses (IPv6 with a colon). */
  addresses: Map<string, string[]>
  /** SRV records: name → targets. */
  services: Map<string, { target: string; port: number; priority: number }[]>
  /** Names answered with SERVFAIL, to stand for a DNS outage. */
  failing: Set<string>
}

export interface DnsServer {
  /** `127.0.0.1:<port>`, for `--dns-servers`. */
  address: string
  zone: Zone
  /** Queries received, as `TYPE name`. */
  queries: string[]
  close(): Promise<void>
}

/** A real DNS server (UDP) on a free loopback port, answering from a zone the test edits; TTL 1 s. */
export async function startDns(): Promise<DnsServer> {
  const zone: Zone = { addresses: new Map(), services: new Map(), failing: new Set() }
  const queries: string[] = []
  const server = dns2.createServer({
    udp: true,
    handle: (request, send) => {
      const response = Packet.createResponseFromRequest(request)
      const [question] = request.questions
      if (!question) return send(response)
      const name = question.name.toLowerCase()
      const typeName = Object.entries(Packet.TYPE).find(([, value]) => value === question.type)?.[0] ?? '?'
      queries.push(`${typeName} ${name}`)
      if (zone.failing.has(name)) {
        response.header.rcode = Packet.RCODE.SERVFAIL
        return send(response)
      }
      const record = { name: question.name, class: Packet.CLASS.IN, ttl: 1 }
      if (question.type === Packet.TYPE.A || question.type === Packet.TYPE.AAAA) {
        const v6 = question.type === Packet.TYPE.AAAA
        for (const address of zone.addresses.get(name) ?? []) {
          if (address.includes(':') === v6)
            response.answers.push(answer({ ...record, type: question.type, address }))
        }
      } else if (question.type === Packet.TYPE.SRV) {
        for (const service of zone.services.get(name) ?? [])
          response.answers.push(answer({ ...record, type: Packet.TYPE.SRV, weight: 1, ...service }))
      }
      if (!zone.addresses.has(name) && !zone.services.has(name)) response.header.rcode = Packet.RCODE.NXDOMAIN
      return send(response)
    },
  })
  const addresses = await server.listen({ udp: { port: 0, address: '127.0.0.1' } })
  const port = addresses.udp?.port
  if (!port) throw new Error('the DNS server did not bind')
  return {
    address: `127.0.0.1:${port}`,
    zone,
    queries,
    close: () => server.close(),
  }
}
