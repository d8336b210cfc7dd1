// Front Door Standard in front of both regions' HTTP API (DICOMweb, ingest status, health).
// Priority routing: the primary region takes all traffic while its /api/health answers 200; the
// secondary (priority 2) takes over when it does not. Give both priority 1 for active/active.

@description('Tags for every resource.')
param tags object = {}

@description('Front Door profile name.')
param profileName string

@description('Front Door endpoint name (becomes <name>-<hash>.z01.azurefd.net).')
param endpointName string

@description('Default host name of the primary region\'s function app.')
param primaryHostName string

@description('Default host name of the secondary region\'s function app.')
param secondaryHostName string

@description('Priority of the secondary origin: 2 = active/passive (default), 1 = active/active.')
@allowed([
  1
  2
])
param secondaryPriority int = 2

@description('Seconds between health probes from each Front Door edge.')
@minValue(5)
@maxValue(255)
param probeIntervalInSeconds int = 30

@description('Log Analytics workspace resource ID for diagnostic settings.')
param logAnalyticsWorkspaceId string

resource profile 'Microsoft.Cdn/profiles@2024-02-01' = {
  name: profileName
  location: 'global'
  tags: tags
  sku: {
    name: 'Standard_AzureFrontDoor'
  }
}

resource endpoint 'Microsoft.Cdn/profiles/afdEndpoints@2024-02-01' = {
  parent: profile
  name: endpointName
  location: 'global'
  tags: tags
  properties: {
    enabledState: 'Enabled'
  }
}

resource originGroup 'Microsoft.Cdn/profiles/originGroups@2024-02-01' = {
  parent: profile
  name: 'functions'
  properties: {
    loadBalancingSettings: {
      sampleSize: 4
      successfulSamplesRequired: 3
      additionalLatencyInMilliseconds: 50
    }
    healthProbeSettings: {
      probePath: '/api/health'
      probeRequestType: 'GET'
      probeProtocol: 'Https'
      probeIntervalInSeconds: probeIntervalInSeconds
    }
    sessionAffinityState: 'Disabled'
  }
}

resource primaryOrigin 'Microsoft.Cdn/profiles/originGroups/origins@2024-02-01' = {
  parent: originGroup
  name: 'primary'
  properties: {
    hostName: primaryHostName
    originHostHeader: primaryHostName
    httpPort: 80
    httpsPort: 443
    priority: 1
    weight: 1000
    enabledState: 'Enabled'
    enforceCertificateNameCheck: true
  }
}

resource secondaryOrigin 'Microsoft.Cdn/profiles/originGroups/origins@2024-02-01' = {
  parent: originGroup
  name: 'secondary'
  properties: {
    hostName: secondaryHostName
    originHostHeader: secondaryHostName
    httpPort: 80
    httpsPort: 443
    priority: secondaryPriority
    weight: 1000
    enabledState: 'Enabled'
    enforceCertificateNameCheck: true
  }
}

// Only the HTTP API under /api: the runtime webhooks (/runtime/...) stay reachable for Event Grid only.
resource route 'Microsoft.Cdn/profiles/afdEndpoints/routes@2024-02-01' = {
  parent: endpoint
  name: 'api'
  properties: {
    originGroup: {
      id: originGroup.id
    }
    supportedProtocols: [
      'Https'
    ]
    patternsToMatch: [
      '/api/*'
    ]
    forwardingProtocol: 'HttpsOnly'
    linkToDefaultDomain: 'Enabled'
    httpsRedirect: 'Disabled'
  }
  dependsOn: [
    primaryOrigin
    secondaryOrigin
  ]
}

resource frontDoorDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: profile
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
  }
}

output endpointHostName string = endpoint.properties.hostName
output profileName string = profile.name
