# The image runs the bridge against a PostgreSQL of yours (DATABASE_URL, or the PG* variables): it
# carries no embedded PostgreSQL. Two stages: the first compiles the TypeScript and bundles the CLI
# (esbuild's binary is an optional dependency, so that stage keeps them); the image gets the
# production dependencies only, without optional ones, which leaves out the ~60 MB of embedded
# PostgreSQL binaries (@embedded-postgres/<platform>, optional dependencies of hookbridge).
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: nothing here needs an install script (our own `prepare` would build before the
# sources are in).
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json index.ts ./
COPY scripts/build.mjs ./scripts/
COPY hooks ./hooks
COPY bridge ./bridge
RUN npm run build

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY sql ./sql
COPY --from=build /app/dist ./dist
USER node
EXPOSE 8056
ENTRYPOINT ["node", "dist/cli/cli.js"]
CMD ["start"]
