# The ofevents image: the controller and the EventSource/Trigger entrypoints.
# Build: docker build -t ofevents/ofevents:0.1.0 .
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json tsconfig.json tsconfig.base.json ./
COPY packages ./packages
RUN npm install --no-audit --no-fund && npm prune --omit=dev

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build --chown=1000:1000 /src/package.json ./
COPY --from=build --chown=1000:1000 /src/node_modules ./node_modules
COPY --from=build --chown=1000:1000 /src/packages ./packages
USER 1000:1000
# Health, readiness and metrics of the entrypoints.
EXPOSE 8081
ENTRYPOINT ["node", "/app/packages/cli/bin/ofevents.js"]
CMD ["controller"]
