import { parentPort } from 'node:worker_threads'
import { parseYaml, type YamlSource } from './yaml.js'

/**
 * Parses policy files off the main thread: YAML parsing grows faster than linearly with a file's size,
 * and the main thread serves traffic. One message in (the files' texts), one message out.
 */
parentPort?.once('message', (sources: YamlSource[]) => {
  parentPort?.postMessage(sources.map((source) => parseYaml(source.file, source.text)))
})
