declare module 'parse-prometheus-text-format' {
  export interface Sample {
    labels?: Record<string, string>
    value?: string
    count?: string
    sum?: string
    buckets?: Record<string, string>
  }
  export interface Family {
    name: string
    help: string
    type: string
    metrics: Sample[]
  }
  export default function parsePrometheusTextFormat(text: string): Family[]
}
