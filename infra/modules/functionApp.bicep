// The Functions app on Flex Consumption (FC1, Linux, Python 3.11) with a user-assigned identity and
// identity-based connections only. App setting names are the ones shared/config.py and the bindings read;
// none of the settings Flex Consumption rejects (FUNCTIONS_WORKER_RUNTIME, WEBSITE_RUN_FROM_PACKAGE, ...).

@description('Azure region.')
param location string

@description('Tags for every resource (the app also gets azd-service-name).')
param tags object = {}

@description('Function app name (globally unique host name prefix).')
param name string

@description('Flex Consumption plan name.')
param planName string

@description('Resource ID of the user-assigned identity.')
param identityId string

@description('Client ID of the user-assigned identity (the __clientId of every connection).')
param identityClientId string

@description('Host storage blob endpoint (AzureWebJobsStorage and the deployment package).')
param hostBlobEndpoint string

@description('Host storage queue endpoint.')
param hostQueueEndpoint string

@description('Host storage table endpoint.')
param hostTableEndpoint string

@description('Blob container on the host account that holds the deployment package.')
param deploymentContainer string

@description('Data storage blob endpoint (DicomStorage connection).')
param dataBlobEndpoint string

@description('Data storage queue endpoint.')
param dataQueueEndpoint string

@description('Data storage table endpoint.')
param dataTableEndpoint string

@description('Endpoint of the region\'s custom Event Grid topic (DicomEvents connection).')
param topicEndpoint string

@description('Application Insights connection string (not a secret: ingestion needs Entra ID, local auth is off).')
param applicationInsightsConnectionString string

@description('Seconds without new instances before a series counts as stable (DICOMFLOW_STABLE_AGE_SECONDS).')
@minValue(0)
param stableAgeSeconds int = 60

@description('Days an inbox blob is kept once its outcome is recorded (DICOMFLOW_INBOX_RETENTION_DAYS; the app sweeps).')
@minValue(1)
param inboxRetentionDays int = 7

@description('Most instances the app scales out to (Flex: 40-1000).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Memory per instance in MB (Flex: 512, 2048 or 4096).')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Spread the plan\'s instances over availability zones (needs a region that offers it for Flex Consumption).')
param zoneRedundant bool = true

@description('Issuer of accepted bearer tokens (DICOMFLOW_AUTH_ISSUER); the app validates tokens itself (shared/auth).')
param authIssuer string

@description('Accepted token audiences, comma-separated (DICOMFLOW_AUTH_AUDIENCE); empty refuses every API call.')
param authAudience string = ''

@description('Browser origins allowed to call the API, comma-separated (DICOMFLOW_CORS_ORIGINS); the app answers CORS.')
param corsOrigins string = ''

@description('Optional Key Vault reference to the Functions keys machine clients may send (DICOMFLOW_AUTH_FUNCTION_KEYS).')
param functionKeysReference string = ''

@description('Key Vault reference to the audit trail\'s patient salt (DICOMFLOW_AUDIT_PATIENT_SALT), the same secret value in both regions.')
param auditPatientSaltReference string

@description('This region\'s key (DICOMFLOW_REGION).')
param regionKey string

@description('The peer region\'s key (DICOMFLOW_PEER_REGION).')
param peerRegionKey string

@description('Table endpoint of the peer region\'s data account (DicomPeerStorage__tableServiceUri: its change feed).')
param peerTableEndpoint string

@description('Front Door profile ID: without Private Link, only requests through it (service tag and header X-Azure-FDID) reach the app; Event Grid reaches the webhooks through it too.')
param frontDoorId string

@description('Front Door reaches the app over Private Link (privateNetworking): its public endpoint admits no one at all.')
param privateLinkOnly bool = true

@description('Failback gate (DICOMFLOW_FAILBACK_MAX_LAG_SECONDS): /api/health answers 503 while this region\'s follower is this many seconds behind its peer; 0: the setting is not given (off).')
@minValue(0)
param failbackMaxLagSeconds int = 0

@description('Subnet for VNet integration (private networking); empty: none.')
param subnetId string = ''

@description('Log Analytics workspace resource ID for diagnostic settings.')
param logAnalyticsWorkspaceId string

// Who may call the app's public endpoint (its main site; the deployment endpoint, scm, has its own rules). Over
// Private Link (privateLinkOnly) no one: Front Door's private endpoint is not subject to these rules. Otherwise Front
// Door alone, this profile's ID checked. Never a service tag without a header: AzureEventGrid (any customer's Event
// Grid) would reach every route around Front Door and its WAF; Event Grid delivers through Front Door instead.
var frontDoorOnly = [
  {
    name: 'front-door'
    action: 'Allow'
    priority: 100
    tag: 'ServiceTag'
    ipAddress: 'AzureFrontDoor.Backend'
    headers: {
      'x-azure-fdid': [
        frontDoorId
      ]
    }
  }
]
var failbackGate = failbackMaxLagSeconds > 0 ? [
  {
    // The primary answers Front Door's probe with 503 (catching up) while its follower lags: failback waits for it.
    name: 'DICOMFLOW_FAILBACK_MAX_LAG_SECONDS'
    value: string(failbackMaxLagSeconds)
  }
] : []

var storageServices = {
  blobServiceUri: dataBlobEndpoint
  queueServiceUri: dataQueueEndpoint
  tableServiceUri: dataTableEndpoint
}

var appSettings = [
  // Functions host storage, identity-based.
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: identityClientId
  }
  {
    name: 'AzureWebJobsStorage__blobServiceUri'
    value: hostBlobEndpoint
  }
  {
    name: 'AzureWebJobsStorage__queueServiceUri'
    value: hostQueueEndpoint
  }
  {
    name: 'AzureWebJobsStorage__tableServiceUri'
    value: hostTableEndpoint
  }
  // The app's data (shared/config.py STORAGE_CONNECTION), used by bindings and by shared/storage/clients.py.
  {
    name: 'DicomStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'DicomStorage__clientId'
    value: identityClientId
  }
  {
    name: 'DicomStorage__blobServiceUri'
    value: storageServices.blobServiceUri
  }
  {
    name: 'DicomStorage__queueServiceUri'
    value: storageServices.queueServiceUri
  }
  {
    name: 'DicomStorage__tableServiceUri'
    value: storageServices.tableServiceUri
  }
  // dicomflow's events (shared/config.py EVENTS_CONNECTION).
  {
    name: 'DicomEvents__topicEndpointUri'
    value: topicEndpoint
  }
  {
    name: 'DicomEvents__credential'
    value: 'managedidentity'
  }
  {
    name: 'DicomEvents__clientId'
    value: identityClientId
  }
  // Two regions (shared/config.py RegionSettings): this region writes '<container>-<regionKey>' and follows the
  // peer's change feed, read from the peer's table endpoint with the same identity (Storage Table Data Reader there).
  {
    name: 'DICOMFLOW_REGION'
    value: regionKey
  }
  {
    name: 'DICOMFLOW_PEER_REGION'
    value: peerRegionKey
  }
  {
    name: 'DicomPeerStorage__tableServiceUri'
    value: peerTableEndpoint
  }
  {
    name: 'DicomPeerStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'DicomPeerStorage__clientId'
    value: identityClientId
  }
  {
    name: 'DICOMFLOW_STABLE_AGE_SECONDS'
    value: string(stableAgeSeconds)
  }
  {
    // The inbox_retention timer deletes an inbox blob past this age only once its outcome is recorded.
    name: 'DICOMFLOW_INBOX_RETENTION_DAYS'
    value: string(inboxRetentionDays)
  }
  {
    // Debounce for aggregates and lookup rows; stable events still wait DICOMFLOW_STABLE_AGE_SECONDS.
    name: 'DICOMFLOW_SETTLE_DELAY_SECONDS'
    value: '5'
  }
  // Sign-in and CORS (shared/config.py AuthSettings): DICOMweb routes are anonymous at the host, the app checks
  // bearer tokens (Entra ID v2), roles and origins itself.
  {
    name: 'DICOMFLOW_AUTH_ISSUER'
    value: authIssuer
  }
  {
    name: 'DICOMFLOW_AUTH_AUDIENCE'
    value: authAudience
  }
  {
    name: 'DICOMFLOW_CORS_ORIGINS'
    value: corsOrigins
  }
  {
    name: 'DICOMFLOW_AUTH_FUNCTION_KEYS'
    value: functionKeysReference
  }
  {
    // The audit trail's patient digests (shared/audit): resolved from this region's vault, never a value here.
    name: 'DICOMFLOW_AUDIT_PATIENT_SALT'
    value: auditPatientSaltReference
  }
  {
    // HTTP streams (azurefunctions-extensions-http-fastapi): DICOMweb retrieve streams from the archive.
    name: 'PYTHON_ENABLE_INIT_INDEXING'
    value: '1'
  }
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: applicationInsightsConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'ClientId=${identityClientId};Authorization=AAD'
  }
]

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
    zoneRedundant: zoneRedundant
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17: DICOMweb clients (viewers, scripts) authenticate with Entra ID bearer tokens checked by the app (shared/auth), not client certificates.
  // checkov:skip=CKV_AZURE_222: the main site's public endpoint denies everyone (Front Door arrives over Private Link) or, without private networking, admits Front Door alone (its service tag with this profile's X-Azure-FDID); it stays on for the deployment endpoint (scm: Entra ID deployments only, basic auth off).
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero by design (cost tracks volume); the passive region's app is the failover capacity. Add alwaysReady instances if cold starts matter.
  // checkov:skip=CKV_AZURE_213: App Service health check does not apply to Flex Consumption; Front Door probes /api/health on each region and fails over.
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identityId
    virtualNetworkSubnetId: empty(subnetId) ? null : subnetId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: concat(appSettings, failbackGate)
      // Clients and Event Grid reach the app only through Front Door, so they get its failover, WAF, rate limit
      // and logs. The deployment endpoint (scm) keeps its own rules (Entra ID deployments only: basic publishing
      // credentials are off below).
      ipSecurityRestrictionsDefaultAction: 'Deny'
      ipSecurityRestrictions: privateLinkOnly ? [] : frontDoorOnly
      scmIpSecurityRestrictionsUseMain: false
      // CORS is answered by the app from DICOMFLOW_CORS_ORIGINS (same code path as locally; it exposes the headers a
      // viewer reads). Platform CORS stays empty: when set, it takes over and the app's CORS answers are dropped.
      cors: {
        allowedOrigins: []
        supportCredentials: false
      }
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${hostBlobEndpoint}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// No publishing with user names and passwords: deployments use Entra ID (azd, func, az functionapp deploy).
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource siteDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: site
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'FunctionAppLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output id string = site.id
output name string = site.name
output defaultHostName string = site.properties.defaultHostName
