// One region's stack: identities, data + host storage, Key Vault, Event Grid topics, the function app, its role
// assignments, (privateNetworking) its private endpoints and (gatewayImage) its DIMSE gateway. main.bicep deploys
// it once per region, after the region's monitoring and Front Door's profile.

@description('Azure region of this stack.')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Resource names for this region (computed in main.bicep from the CAF prefixes and the token).')
param names object

@description('This region\'s key (DICOMFLOW_REGION): its regional containers are named <container>-<key>.')
param regionKey string

@description('The peer region\'s key (DICOMFLOW_PEER_REGION): its regional containers are replicated here.')
param peerRegionKey string

@description('Containers that stay in this region (shared/storage/layout.py LOCAL).')
param localContainers array

@description('Containers each region writes under its own key and replicates to the other (layout.py REGIONAL).')
param regionalContainers array

@description('The archive container\'s name without the region key (its own copy supports version-level immutability from creation).')
param archiveContainer string

@description('The dead-letter container (Event Grid\'s identities may write there and nowhere else).')
param deadLetterContainer string

@description('The inbox container (the DIMSE gateway writes there).')
param inboxContainer string

@description('Regional containers the DIMSE gateway reads (the archive and the configuration: this region\'s copy and the peer\'s replica).')
param gatewayReads array

@description('The app\'s queues (shared/storage/layout.py QUEUES).')
param queues array

@description('The app\'s tables (shared/index/tables.py TABLES).')
param tables array

@description('Lifecycle management rules for the data account.')
param lifecycleRules array

@description('The lifecycle rules tier by last access: turn on access-time tracking.')
param tieringByAccess bool = false

@description('Days each archived blob version in this region\'s own archive stays immutable (0 = off). Never on the replica: replication into an immutable destination fails.')
@minValue(0)
param immutabilityDays int = 0

@description('The audit container (shared/storage/layout.py AUDIT): append blobs under an append-only retention policy.')
param auditContainer string

@description('Days each audit record stays unchangeable (time-based retention, appends allowed).')
@minValue(1)
param auditRetentionDays int = 2190

@description('Days deleted blobs, versions and containers stay recoverable.')
@minValue(1)
@maxValue(365)
param softDeleteDays int = 14

@description('Container on the host account for the Flex Consumption deployment package.')
param deploymentContainer string

@description('Log Analytics workspace of this region (modules/monitoring.bicep).')
param logAnalyticsWorkspaceId string

@description('Application Insights component of this region.')
param applicationInsightsName string

@description('Application Insights connection string (not a secret: ingestion needs Entra ID).')
param applicationInsightsConnectionString string

@description('Front Door profile ID (its frontDoorId): the function app admits only requests carrying it in X-Azure-FDID.')
param frontDoorId string

@description('Table endpoint of the peer region\'s data account (the follower reads its change feed).')
param peerTableEndpoint string

@description('Private endpoints for the data account, Key Vault and the custom topic; their firewalls deny the public internet.')
param privateNetworking bool = true

@description('Subnet the function app integrates with (privateNetworking).')
param appSubnetId string = ''

@description('Subnet of the private endpoints (privateNetworking).')
param endpointSubnetId string = ''

@description('Subnet of the DIMSE gateway\'s Container Apps environment in this region\'s network (privateNetworking); empty: the gateway gets a network of its own.')
param gatewaySubnetId string = ''

@description('Private DNS zone IDs by service: blob, queue, table, vault, topic (privateNetworking).')
param privateDnsZoneIds object = {}

@description('DICOMFLOW_STABLE_AGE_SECONDS for the app.')
@minValue(0)
param stableAgeSeconds int = 60

@description('DICOMFLOW_INBOX_RETENTION_DAYS for the app: days an inbox blob with a recorded outcome is kept.')
@minValue(1)
param inboxRetentionDays int = 7

@description('Most instances the function app scales out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Memory per function app instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Zone redundancy of the Flex Consumption plan and the DIMSE gateway\'s environment.')
param zoneRedundant bool = true

@description('Issuer of accepted bearer tokens (DICOMFLOW_AUTH_ISSUER), e.g. https://login.microsoftonline.com/<tenant>/v2.0.')
param authIssuer string

@description('Accepted token audiences, comma-separated (DICOMFLOW_AUTH_AUDIENCE); empty refuses every API call.')
param authAudience string = ''

@description('Browser origins allowed to call the API, comma-separated (DICOMFLOW_CORS_ORIGINS).')
param corsOrigins string = ''

@description('Optional Key Vault secret (in this region\'s vault) with Functions keys for machine clients.')
param functionKeysSecretName string = ''

@description('Name of the Key Vault secret (in this region\'s vault) that holds the audit trail\'s patient salt.')
param auditPatientSaltSecretName string

@secure()
@minLength(15)
@description('The audit trail\'s patient salt (DICOMFLOW_AUDIT_PATIENT_SALT), the same in both regions: written to this region\'s vault, read from there by the function app and the DIMSE gateway.')
param auditPatientSalt string

@description('Optional: object ID of the deployer, who may read the salt secret (azd reads it back before a deployment); empty: nobody.')
param auditSaltReaderPrincipalId string = ''

@description('Failback gate (DICOMFLOW_FAILBACK_MAX_LAG_SECONDS): /api/health answers 503 while this region\'s follower is this far behind its peer; 0 = off (the secondary).')
@minValue(0)
param failbackMaxLagSeconds int = 0

@description('Optional user or group object ID granted Storage Blob Data Contributor on the data account.')
param userPrincipalId string = ''

@description('DIMSE gateway image; empty: no gateway in this region.')
param gatewayImage string = ''

@description('DIMSE gateway: calling AE titles allowed (comma-separated; empty only with mutual TLS).')
param gatewayAllowedAeTitles string = ''

@description('DIMSE gateway: source networks allowed (comma-separated CIDRs; empty: any).')
param gatewayAllowedNetworks string = ''

@description('DIMSE gateway: name of the secret in this region\'s vault with its TLS certificate (PEM with key); empty: plain TCP.')
param gatewayTlsCertificateSecretName string = ''

@description('DIMSE gateway: PEM of the CA of client certificates (mutual TLS); empty: none.')
param gatewayTlsClientCaCertificate string = ''

@description('DIMSE gateway: expose the TCP port outside its virtual network.')
param gatewayExternalIngress bool = false

var deployGateway = !empty(gatewayImage)
var ownContainers = [for c in regionalContainers: '${c}-${regionKey}']
var peerContainers = [for c in regionalContainers: '${c}-${peerRegionKey}']
// How the DIMSE gateway admits clients (gateway.bicep takes only the admitting values): an AE allow-list, mutual
// TLS (its certificate and a client CA), or both. Otherwise the sentence below is passed, not an allowed value, and
// Azure refuses the deployment with it: the gateway never listens beyond loopback open.
var gatewayAllowList = !empty(gatewayAllowedAeTitles)
var gatewayMutualTls = !empty(gatewayTlsCertificateSecretName) && !empty(gatewayTlsClientCaCertificate)
var gatewayAdmission = !empty(gatewayTlsClientCaCertificate) && empty(gatewayTlsCertificateSecretName) ? 'refused: gatewayTlsClientCaCertificate needs gatewayTlsCertificateSecretName (the gateway certificate) to make TLS mutual' : gatewayAllowList && gatewayMutualTls ? 'allow-list and mutual TLS' : gatewayAllowList ? 'allow-list' : gatewayMutualTls ? 'mutual TLS' : 'refused: the DIMSE gateway listens beyond loopback; set gatewayAllowedAeTitles (calling AE titles) or mutual TLS (gatewayTlsCertificateSecretName and gatewayTlsClientCaCertificate)'
var gatewayOwnReads = [for c in gatewayReads: '${c}-${regionKey}']
var gatewayPeerReads = [for c in gatewayReads: '${c}-${peerRegionKey}']

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: names.identity
  location: location
  tags: tags
}

// The DIMSE gateway runs as its own identity: it needs far less than the function app.
resource gatewayIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = if (deployGateway) {
  name: names.gatewayIdentity
  location: location
  tags: tags
}

module dataStorage 'storage.bicep' = {
  name: 'data-storage'
  params: {
    name: names.dataStorage
    location: location
    tags: tags
    containers: concat(localContainers, ownContainers, peerContainers)
    queues: queues
    tables: tables
    lifecycleRules: lifecycleRules
    lastAccessTracking: tieringByAccess
    softDeleteDays: softDeleteDays
    // Version-level immutability support from the container's creation, whatever immutabilityDays says: Azure turns
    // it on for an existing container only by a migration, so a later deployment that sets the days would fail.
    // Support alone locks nothing; the time-based policy (immutabilityDays > 0) does.
    immutableContainer: '${archiveContainer}-${regionKey}'
    immutabilityDays: immutabilityDays
    appendOnlyContainer: auditContainer
    appendOnlyDays: auditRetentionDays
    privateOnly: privateNetworking
    logAnalyticsWorkspaceId: logAnalyticsWorkspaceId
  }
}

module hostStorage 'storage.bicep' = {
  name: 'host-storage'
  params: {
    name: names.hostStorage
    location: location
    tags: tags
    containers: [
      deploymentContainer
    ]
    softDeleteDays: softDeleteDays
    logAnalyticsWorkspaceId: logAnalyticsWorkspaceId
  }
}

module keyVault 'keyVault.bicep' = {
  name: 'key-vault'
  params: {
    name: names.keyVault
    location: location
    tags: tags
    privateOnly: privateNetworking
    logAnalyticsWorkspaceId: logAnalyticsWorkspaceId
    auditPatientSaltSecretName: auditPatientSaltSecretName
    auditPatientSalt: auditPatientSalt
  }
}

module eventGrid 'eventGrid.bicep' = {
  name: 'event-grid'
  params: {
    location: location
    tags: tags
    storageAccountId: dataStorage.outputs.id
    systemTopicName: names.systemTopic
    customTopicName: names.customTopic
    publicNetworkAccess: !privateNetworking
    logAnalyticsWorkspaceId: logAnalyticsWorkspaceId
  }
}

// Private endpoints (privateNetworking): the PHI account's blob, queue and table endpoints, Key Vault, the topic.
var privateTargets = [
  {
    name: 'data-blob'
    id: dataStorage.outputs.id
    group: 'blob'
  }
  {
    name: 'data-queue'
    id: dataStorage.outputs.id
    group: 'queue'
  }
  {
    name: 'data-table'
    id: dataStorage.outputs.id
    group: 'table'
  }
  {
    name: 'vault'
    id: keyVault.outputs.id
    group: 'vault'
  }
  {
    name: 'topic'
    id: eventGrid.outputs.customTopicId
    group: 'topic'
  }
]

module privateEndpoints 'privateEndpoint.bicep' = [for target in (privateNetworking ? privateTargets : []): {
  name: 'pe-${target.name}'
  params: {
    location: location
    tags: tags
    name: 'pe-${target.name}-${names.dataStorage}'
    subnetId: endpointSubnetId
    targetId: target.id
    groupId: target.group
    dnsZoneId: privateDnsZoneIds[target.group]
  }
}]

module roles 'roleAssignments.bicep' = {
  name: 'role-assignments'
  params: {
    principalId: identity.properties.principalId
    dataStorageAccountName: dataStorage.outputs.name
    hostStorageAccountName: hostStorage.outputs.name
    customTopicName: eventGrid.outputs.customTopicName
    applicationInsightsName: applicationInsightsName
    keyVaultName: keyVault.outputs.name
    systemTopicPrincipalId: eventGrid.outputs.systemTopicPrincipalId
    customTopicPrincipalId: eventGrid.outputs.customTopicPrincipalId
    deadLetterContainer: deadLetterContainer
    userPrincipalId: userPrincipalId
    gatewayPrincipalId: deployGateway ? gatewayIdentity!.properties.principalId : ''
    // C-STORE into the inbox; its audit records (gateway/audit.py: append blobs) into the audit container; a C-MOVE
    // that tools migrate asked for straight into this region's archive (and an oversized metadata sidecar), its
    // rows to ingest_batch by a message on the batch queue (shared/ingest/batch.py).
    gatewayWrites: [
      inboxContainer
      auditContainer
      '${archiveContainer}-${regionKey}'
      'dicom-metadata'
    ]
    gatewaySendsTo: [
      'dicom-ingest-batch'
    ]
    gatewayReads: concat(gatewayOwnReads, gatewayPeerReads)
    gatewaySecretName: gatewayTlsCertificateSecretName
    // The vault's output, not the parameter: the assignments wait for the secret they are scoped to.
    auditPatientSaltSecretName: keyVault.outputs.auditPatientSaltSecretName
    saltReaderPrincipalId: auditSaltReaderPrincipalId
  }
}

module gateway 'gateway.bicep' = if (deployGateway) {
  name: 'dimse-gateway'
  params: {
    location: location
    tags: tags
    environmentName: names.gatewayEnvironment
    name: names.gateway
    vnetName: names.gatewayVnet
    subnetId: gatewaySubnetId
    zoneRedundant: zoneRedundant
    identityId: gatewayIdentity!.id
    identityClientId: gatewayIdentity!.properties.clientId
    regionKey: regionKey
    peerRegionKey: peerRegionKey
    image: gatewayImage
    dataBlobEndpoint: dataStorage.outputs.blobEndpoint
    dataTableEndpoint: dataStorage.outputs.tableEndpoint
    dataQueueEndpoint: dataStorage.outputs.queueEndpoint
    logAnalyticsWorkspaceId: logAnalyticsWorkspaceId
    allowedAeTitles: gatewayAllowedAeTitles
    admission: gatewayAdmission
    allowedNetworks: gatewayAllowedNetworks
    tlsCertificateSecretUri: empty(gatewayTlsCertificateSecretName) ? '' : '${keyVault.outputs.uri}secrets/${gatewayTlsCertificateSecretName}'
    tlsClientCaCertificate: gatewayTlsClientCaCertificate
    externalIngress: gatewayExternalIngress
    auditPatientSaltSecretUri: keyVault.outputs.auditPatientSaltSecretUri
  }
  // The identity must hold its roles before the first replica reads the index and the config container.
  dependsOn: [
    roles
  ]
}

module functionApp 'functionApp.bicep' = {
  name: 'function-app'
  params: {
    location: location
    tags: tags
    name: names.functionApp
    planName: names.plan
    identityId: identity.id
    identityClientId: identity.properties.clientId
    hostBlobEndpoint: hostStorage.outputs.blobEndpoint
    hostQueueEndpoint: hostStorage.outputs.queueEndpoint
    hostTableEndpoint: hostStorage.outputs.tableEndpoint
    deploymentContainer: deploymentContainer
    dataBlobEndpoint: dataStorage.outputs.blobEndpoint
    dataQueueEndpoint: dataStorage.outputs.queueEndpoint
    dataTableEndpoint: dataStorage.outputs.tableEndpoint
    topicEndpoint: eventGrid.outputs.customTopicEndpoint
    applicationInsightsConnectionString: applicationInsightsConnectionString
    stableAgeSeconds: stableAgeSeconds
    inboxRetentionDays: inboxRetentionDays
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    zoneRedundant: zoneRedundant
    authIssuer: authIssuer
    authAudience: authAudience
    corsOrigins: corsOrigins
    functionKeysReference: empty(functionKeysSecretName) ? '' : '@Microsoft.KeyVault(VaultName=${keyVault.outputs.name};SecretName=${functionKeysSecretName})'
    auditPatientSaltReference: '@Microsoft.KeyVault(VaultName=${keyVault.outputs.name};SecretName=${keyVault.outputs.auditPatientSaltSecretName})'
    failbackMaxLagSeconds: failbackMaxLagSeconds
    regionKey: regionKey
    peerRegionKey: peerRegionKey
    peerTableEndpoint: peerTableEndpoint
    frontDoorId: frontDoorId
    privateLinkOnly: privateNetworking
    subnetId: appSubnetId
    logAnalyticsWorkspaceId: logAnalyticsWorkspaceId
  }
  // The host must be able to read its deployment package and storage when it first starts.
  dependsOn: [
    roles
  ]
}

output dataStorageAccountId string = dataStorage.outputs.id
output dataStorageAccountName string = dataStorage.outputs.name
output dataBlobEndpoint string = dataStorage.outputs.blobEndpoint
// The blob host alone (Front Door's inbox origin).
output dataBlobHost string = replace(replace(dataStorage.outputs.blobEndpoint, 'https://', ''), '/', '')
output functionAppId string = functionApp.outputs.id
output functionAppName string = functionApp.outputs.name
output functionAppHostName string = functionApp.outputs.defaultHostName
output identityName string = identity.name
output identityPrincipalId string = identity.properties.principalId
output systemTopicName string = eventGrid.outputs.systemTopicName
output systemTopicId string = eventGrid.outputs.systemTopicId
output customTopicName string = eventGrid.outputs.customTopicName
output customTopicId string = eventGrid.outputs.customTopicId
output customTopicEndpoint string = eventGrid.outputs.customTopicEndpoint
output keyVaultName string = keyVault.outputs.name
output gatewayName string = deployGateway ? gateway!.outputs.name : ''
output gatewayId string = deployGateway ? gateway!.outputs.id : ''
// The gateway environment's internal address (the gateway name points at the ingest region's) and its network.
output gatewayAddress string = deployGateway ? gateway!.outputs.staticIp : ''
output gatewayVnetId string = deployGateway ? gateway!.outputs.vnetId : ''
