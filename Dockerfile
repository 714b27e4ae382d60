# kube-proxy-ts: docker build -t kube-proxy-ts:dev .
#
# Build as an unprivileged user, and ship only the compiled code and the production
# dependencies.
FROM node:20-bookworm-slim AS build
WORKDIR /src
RUN chown node:node /src
USER node
COPY --chown=node:node package.json package-lock.json ./
# No scripts: `prepare` compiles, and the sources are not copied yet.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY --chown=node:node tsconfig.json ./
COPY --chown=node:node src ./src
COPY --chown=node:node native ./native
COPY --chown=node:node scripts ./scripts
RUN npm run build && npm prune --omit=dev --ignore-scripts --no-audit --no-fund

FROM node:20-bookworm-slim
# Debian's iptables package holds both variants (iptables-legacy*, iptables-nft*); the
# agent reads which one the host's rules are in and drives that one.
# libnetfilter-conntrack3 deletes stale UDP and SCTP flows over netlink (through koffi);
# the conntrack command does it where the library does not load. libnftables1 runs nftables
# mode's transactions in process; nftables (the nft command) where it does not load. kmod: modprobe for the
# modules iptables loads on demand, from the host's /lib/modules.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables libnetfilter-conntrack3 conntrack libnftables1 nftables kmod ipset ipvsadm \
 && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production
WORKDIR /app
# package.json marks dist/ as ES modules.
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
COPY --from=build /src/dist/native ./dist/native
# Root, as kube-proxy runs: programming the node's netfilter needs CAP_NET_ADMIN there.
USER root
ENTRYPOINT ["node", "/app/dist/src/main.js"]
