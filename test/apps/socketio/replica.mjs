// One replica of a Horizon-like fleet app on Socket.IO: browsers' dashboards on /ws/dashboard/socket.io/,
// sensors (the Node client) on /ws/sensors/socket.io/, both servers sharing Redis through the Socket.IO
// Redis adapter, so a sensor's reading reaches every dashboard and a dashboard's command every sensor,
// whatever replica each is on. Prints PORT <n> once listening, CONNECT/READING/COMMAND lines as it works.
import { readFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import { createAdapter } from '@socket.io/redis-adapter'
import { Redis } from 'ioredis'
import { Server } from 'socket.io'

const replica = process.env.REPLICA
const pub = new Redis(process.env.REDIS_URL)
const sub = pub.duplicate()
// Both connected before the adapters subscribe (a subscriber connection takes no other command).
await Promise.all([pub, sub].map((client) => new Promise((resolve) => client.once('ready', resolve))))
const page = await readFile(new URL('./dashboard.html', import.meta.url), 'utf8')

const http = createServer((request, response) => {
  if (request.url === '/health') {
    response.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}')
  } else if (request.url === '/dashboard') {
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(page)
  } else {
    response.writeHead(404).end()
  }
})

// Two Socket.IO servers on one HTTP server: neither may destroy the other's upgrades. CORS is the gateway's.
const dashboards = new Server(http, {
  destroyUpgrade: false,
  path: '/ws/dashboard/socket.io/',
  adapter: createAdapter(pub, sub, { key: 'dashboards' }),
})
const sensors = new Server(http, {
  destroyUpgrade: false,
  path: '/ws/sensors/socket.io/',
  serveClient: false,
  adapter: createAdapter(pub, sub, { key: 'sensors' }),
})

function transports(socket) {
  const first = socket.conn.transport.name
  socket.conn.once('upgrade', (transport) => console.log(`UPGRADE ${socket.id} ${first}->${transport.name}`))
}

dashboards.on('connection', (socket) => {
  console.log(`CONNECT dashboard ${socket.id} ${socket.handshake.headers.origin ?? '-'}`)
  transports(socket)
  socket.emit('welcome', { replica })
  socket.on('command', (text, ack) => {
    console.log(`COMMAND ${text}`)
    sensors.emit('command', { text, from: replica })
    ack({ replica })
  })
})

sensors.on('connection', (socket) => {
  const sensor = socket.handshake.headers.authorization?.replace(/^Bearer /, '') ?? '-'
  console.log(`CONNECT sensor ${sensor} ${socket.handshake.headers.origin ?? '-'}`)
  transports(socket)
  socket.emit('welcome', { replica })
  socket.on('reading', (value, ack) => {
    console.log(`READING ${sensor} ${value}`)
    dashboards.emit('reading', { sensor, value, via: replica })
    ack({ replica })
  })
})

http.listen(0, '127.0.0.1', () => console.log(`PORT ${http.address().port}`))
