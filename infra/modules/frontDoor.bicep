// Front Door Standard in front of both regions' HTTP API (DICOMweb, ingest status, health), on the profile that
// frontDoorProfile.bicep created. Priority routing: the primary region takes all traffic while its /api/health
// answers 200; the secondary (priority 2) takes over when it does not. With activeActiveReads, reads go to both
// regions and a rule sends writes (every method but GET, HEAD and OPTIONS) to the primary-first origin group.

@description('Tags for every resource.')
param tags object = {}

@description('Front Door profile name (frontDoorProfile.bicep).')
param profileName string

@description('Front Door endpoint name (becomes <name>-<hash>.z01.azurefd.net).')
param endpointName string

@description('Default host name of the primary region\'s function app.')
param primaryHostName string

@description('Default host name of the secondary region\'s function app.')
param secondaryHostName string

@description('Reads from both regions (writes still primary-first); false: active/passive for everything.')
param activeActiveReads bool = false

@description('Seconds between health probes from each Front Door edge.')
@minValue(5)
@maxValue(255)
param probeIntervalInSeconds int = 30

var groups = [
  {
    name: 'functions'
    secondaryPriority: activeActiveReads ? 1 : 2
  }
  {
    name: 'functions-writes'
    secondaryPriority: 2
  }
]

resource profile 'Microsoft.Cdn/profiles@2024-02-01' existing = {
  name: profileName
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

resource originGroups 'Microsoft.Cdn/profiles/originGroups@2024-02-01' = [for g in groups: {
  parent: profile
  name: g.name
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
}]

resource primaryOrigins 'Microsoft.Cdn/profiles/originGroups/origins@2024-02-01' = [for (g, i) in groups: {
  parent: originGroups[i]
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
}]

resource secondaryOrigins 'Microsoft.Cdn/profiles/originGroups/origins@2024-02-01' = [for (g, i) in groups: {
  parent: originGroups[i]
  name: 'secondary'
  properties: {
    hostName: secondaryHostName
    originHostHeader: secondaryHostName
    httpPort: 80
    httpsPort: 443
    priority: g.secondaryPriority
    weight: 1000
    enabledState: 'Enabled'
    enforceCertificateNameCheck: true
  }
}]

// Writes to the primary-first group (only matters with activeActiveReads; harmless otherwise).
resource writeRules 'Microsoft.Cdn/profiles/ruleSets@2024-02-01' = {
  parent: profile
  name: 'writes'
}

resource writesToPrimary 'Microsoft.Cdn/profiles/ruleSets/rules@2024-02-01' = {
  parent: writeRules
  name: 'primaryFirst'
  properties: {
    order: 1
    conditions: [
      {
        name: 'RequestMethod'
        parameters: {
          typeName: 'DeliveryRuleRequestMethodConditionParameters'
          operator: 'Equal'
          // Every method that is not a read: Front Door's RequestMethod condition documents GET, HEAD, POST, PUT,
          // DELETE, OPTIONS and TRACE only (PATCH is refused at deployment), so writes are "not a read".
          negateCondition: true
          matchValues: [
            'GET'
            'HEAD'
            'OPTIONS'
          ]
        }
      }
    ]
    actions: [
      {
        name: 'RouteConfigurationOverride'
        parameters: {
          typeName: 'DeliveryRuleRouteConfigurationOverrideActionParameters'
          originGroupOverride: {
            originGroup: {
              id: originGroups[1].id
            }
            forwardingProtocol: 'HttpsOnly'
          }
        }
      }
    ]
  }
}

// Only the HTTP API under /api: the runtime webhooks (/runtime/...) stay reachable for Event Grid only.
resource route 'Microsoft.Cdn/profiles/afdEndpoints/routes@2024-02-01' = {
  parent: endpoint
  name: 'api'
  properties: {
    originGroup: {
      id: originGroups[0].id
    }
    ruleSets: [
      {
        id: writeRules.id
      }
    ]
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
    primaryOrigins
    secondaryOrigins
    writesToPrimary
  ]
}

output endpointHostName string = endpoint.properties.hostName
