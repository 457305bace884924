FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY index.ts ./
COPY hooks ./hooks
COPY bridge ./bridge
COPY sql ./sql
RUN npm ci && npm prune --omit=dev
ENV NODE_ENV=production
EXPOSE 8056
ENTRYPOINT ["node", "dist/bridge/cli.js"]
CMD ["start"]
