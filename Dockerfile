# syntax=docker/dockerfile:1
# Build stage: compile TypeScript with the dev dependencies.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build

# Runtime stage: production dependencies only, non-root, allowed to bind 80/443.
FROM node:20-bookworm-slim
# Let the non-root user bind ports below 1024 instead of running as root.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcap2-bin \
 && setcap cap_net_bind_service=+ep "$(readlink -f "$(command -v node)")" \
 && apt-get purge -y libcap2-bin && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY policy.schema.json ./
COPY policies ./examples/policies
RUN mkdir -p /etc/portcullis/policies /var/lib/portcullis \
 && chown node:node /var/lib/portcullis && chmod 0700 /var/lib/portcullis
USER node
ENV PORTCULLIS_POLICIES=/etc/portcullis/policies \
    PORTCULLIS_STATE_DIR=/var/lib/portcullis \
    PORTCULLIS_HTTP_PORT=80 \
    PORTCULLIS_HTTPS_PORT=443 \
    PORTCULLIS_ADMIN_PORT=9090 \
    PORTCULLIS_WORKERS=auto
VOLUME ["/etc/portcullis/policies", "/var/lib/portcullis"]
EXPOSE 80 443
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9090/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "dist/cli.js"]
CMD ["serve"]
