/**
 * Directus' other services, by name, as classes that refuse to be constructed. Extensions destructure
 * them at register time (`const { MailService, ItemsService } = services`) and may never use them: that
 * must keep working; only `new MailService(...)` fails, with an error that says why.
 */
import { HookbridgeError } from '../../hooks/errors.js';

/** What `api/src/services/index.ts` exports in Directus 9–11, less ItemsService. */
export const DIRECTUS_SERVICES = [
  'AccessService',
  'ActivityService',
  'AssetsService',
  'AuthenticationService',
  'AuthorizationService',
  'CollectionsService',
  'CommentsService',
  'DashboardsService',
  'ExportService',
  'ExtensionsService',
  'FieldsService',
  'FilesService',
  'FlowsService',
  'FoldersService',
  'GraphQLService',
  'ImportService',
  'MailService',
  'MetaService',
  'NotificationsService',
  'OperationsService',
  'PanelsService',
  'PayloadService',
  'PermissionsService',
  'PoliciesService',
  'PresetsService',
  'RelationsService',
  'RevisionsService',
  'RolesService',
  'SchemaService',
  'ServerService',
  'SettingsService',
  'SharesService',
  'SpecificationService',
  'TFAService',
  'TranslationsService',
  'UsersService',
  'UtilsService',
  'VersionsService',
  'WebhooksService',
  'WebSocketService',
] as const;

export const SERVICE_NOT_OFFERED = 'E_SERVICE_NOT_OFFERED';

export type UnofferedService = new (...args: unknown[]) => never;

/** A class named `name` whose constructor throws E_SERVICE_NOT_OFFERED. */
export function unofferedService(name: string, offered: string[]): UnofferedService {
  const message =
    `${name} is a Directus service that hookbridge does not offer: hookbridge's services are ${offered.join(', ')}. ` +
    `hookbridge runs beside PostgreSQL, without Directus' users, files, mail or settings: use the table's ` +
    `ItemsService, or the register context's database, for what lives in your own tables.`;
  const service = class {
    constructor() {
      throw new HookbridgeError(SERVICE_NOT_OFFERED, message, { details: { service: name } });
    }
  };
  Object.defineProperty(service, 'name', { value: name });
  return service as unknown as UnofferedService;
}

/** Built once: they depend on nothing (what `services` offers besides is ItemsService). */
export const UNOFFERED_SERVICES = Object.freeze(
  Object.fromEntries(DIRECTUS_SERVICES.map((name) => [name, unofferedService(name, ['ItemsService'])])) as Record<
    (typeof DIRECTUS_SERVICES)[number],
    UnofferedService
  >,
);
