# Build as an unprivileged user, ship only the compiled code and production dependencies.
FROM node:20-bookworm-slim AS build
WORKDIR /src
RUN chown node:node /src
USER node
COPY --chown=node:node package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY --chown=node:node . .
RUN npx tsc -p . && npm prune --omit=dev

FROM node:20-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables nftables ipset ipvsadm conntrack iproute2 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
ENTRYPOINT ["node", "/app/dist/src/main.js"]
