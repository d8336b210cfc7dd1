// Front Door Premium in front of both regions (global resource group, on the profile frontDoorProfile.bicep made),
// behind one WAF policy (a managed rule set and a per-client rate limit) on every endpoint. No route caches: every
// answer is patient data for one caller.
//
// Endpoints:
// - api: /api/* (DICOMweb, ingest status, health) with priority routing: the primary region takes all traffic
//   while its /api/health answers 200 and its origin is enabled; the secondary (priority 2) takes over otherwise.
//   With activeActiveReads, reads go to both regions and a rule sends writes (every method but GET, HEAD and
//   OPTIONS) to the primary-first origin group.
// - hooks-<region>: /runtime/webhooks/* of one region's app, for that region's Event Grid subscriptions (stage 2):
//   Event Grid reaches the apps through Front Door and its WAF like every client, so no service tag admits it (or
//   anyone else's Event Grid) around Front Door. One origin each, no health probe (Microsoft's advice for a group of
//   one: the probe could only take the only origin away).
// - inbox: /dicom-inbox/* of the data account of ingestRegion, for blob uploaders (Entra ID tokens, as against
//   the account itself): one address that follows the region taking uploads. No probe either (storage has no
//   anonymous health route); the runbook switches it with the origin's enabled state.
// With privateLink (privateNetworking), every origin is reached over Private Link: Front Door's managed private
// endpoints, approved on the app and the account (infra/scripts/postdeploy.sh does it), and nothing public.

@description('Tags for every resource.')
param tags object = {}

@description('Front Door profile name (frontDoorProfile.bicep).')
param profileName string

@description('WAF policy name (letters and digits).')
param wafPolicyName string

@description('API endpoint name (becomes <name>-<hash>.z01.azurefd.net).')
param apiEndpointName string

@description('Event Grid webhook endpoint of the primary region\'s app.')
param primaryHooksEndpointName string

@description('Event Grid webhook endpoint of the secondary region\'s app.')
param secondaryHooksEndpointName string

@description('Blob uploaders\' endpoint (the inbox of ingestRegion).')
param inboxEndpointName string

@description('The primary region\'s function app: hostName, id, location.')
param primaryApp object

@description('The secondary region\'s function app: hostName, id, location.')
param secondaryApp object

@description('The primary region\'s data account: hostName (blob), id, location.')
param primaryInbox object

@description('The secondary region\'s data account: hostName (blob), id, location.')
param secondaryInbox object

@description('Reach every origin over Private Link (Front Door Premium managed private endpoints).')
param privateLink bool = true

@description('Reads from both regions (writes still primary-first); false: active/passive for everything.')
param activeActiveReads bool = false

@description('false holds the primary\'s API origins Disabled (the operator\'s failback gate).')
param primaryOriginEnabled bool = true

@description('The region whose inbox takes blob uploads: primary or secondary.')
@allowed([
  'primary'
  'secondary'
])
param ingestRegion string = 'primary'

@description('Seconds between health probes from each Front Door edge.')
@minValue(5)
@maxValue(255)
param probeIntervalInSeconds int = 30

@description('WAF mode: Prevention blocks, Detection only logs.')
@allowed([
  'Prevention'
  'Detection'
])
param wafMode string = 'Prevention'

@description('Most requests to /api/* per client address per minute; more are blocked until the minute ends.')
@minValue(100)
param rateLimitPerMinute int = 6000

@description('The inbox container (the inbox route\'s path).')
param inboxContainer string

var apiGroups = [
  {
    name: 'functions'
    secondaryPriority: activeActiveReads ? 1 : 2
  }
  {
    name: 'functions-writes'
    secondaryPriority: 2
  }
]
var primaryLink = privateLink ? {
  privateLink: {
    id: primaryApp.id
  }
  groupId: 'sites'
  privateLinkLocation: primaryApp.location
  requestMessage: 'Front Door (dicomflow API)'
} : null
var secondaryLink = privateLink ? {
  privateLink: {
    id: secondaryApp.id
  }
  groupId: 'sites'
  privateLinkLocation: secondaryApp.location
  requestMessage: 'Front Door (dicomflow API)'
} : null
var primaryInboxLink = privateLink ? {
  privateLink: {
    id: primaryInbox.id
  }
  groupId: 'blob'
  privateLinkLocation: primaryInbox.location
  requestMessage: 'Front Door (dicomflow inbox)'
} : null
var secondaryInboxLink = privateLink ? {
  privateLink: {
    id: secondaryInbox.id
  }
  groupId: 'blob'
  privateLinkLocation: secondaryInbox.location
  requestMessage: 'Front Door (dicomflow inbox)'
} : null

resource profile 'Microsoft.Cdn/profiles@2024-02-01' existing = {
  name: profileName
}

// --- the WAF policy, on every endpoint -----------------------------------------------------------------------------

resource waf 'Microsoft.Network/FrontDoorWebApplicationFirewallPolicies@2025-03-01' = {
  name: wafPolicyName
  location: 'Global'
  tags: tags
  sku: {
    name: 'Premium_AzureFrontDoor'
  }
  properties: {
    policySettings: {
      enabledState: 'Enabled'
      mode: wafMode
      // Bodies are DICOM (STOW-RS multipart, blob uploads: binary the managed rules would misread as attacks) and
      // Event Grid JSON; the app parses them within its own budgets. URIs, query strings, headers and cookies are
      // inspected.
      requestBodyCheck: 'Disabled'
      // The WAF log keeps no query string (QIDO queries name patients), no URI (it holds the query) and no
      // credential.
      logScrubbing: {
        state: 'Enabled'
        scrubbingRules: [
          {
            matchVariable: 'QueryStringArgNames'
            selectorMatchOperator: 'EqualsAny'
            state: 'Enabled'
          }
          {
            matchVariable: 'RequestUri'
            selectorMatchOperator: 'EqualsAny'
            state: 'Enabled'
          }
          {
            matchVariable: 'RequestHeaderNames'
            selectorMatchOperator: 'Equals'
            selector: 'Authorization'
            state: 'Enabled'
          }
          {
            matchVariable: 'RequestHeaderNames'
            selectorMatchOperator: 'Equals'
            selector: 'x-functions-key'
            state: 'Enabled'
          }
        ]
      }
    }
    customRules: {
      rules: [
        {
          // One client may not take the API down: more than rateLimitPerMinute requests a minute from one address
          // are refused until the minute ends. Event Grid's webhooks and blob uploads are not counted here.
          name: 'ratePerClient'
          priority: 100
          enabledState: 'Enabled'
          ruleType: 'RateLimitRule'
          rateLimitDurationInMinutes: 1
          rateLimitThreshold: rateLimitPerMinute
          groupBy: [
            {
              variableName: 'SocketAddr'
            }
          ]
          matchConditions: [
            {
              matchVariable: 'RequestUri'
              operator: 'Contains'
              matchValue: [
                '/api/'
              ]
            }
          ]
          action: 'Block'
        }
      ]
    }
    managedRules: {
      managedRuleSets: [
        {
          ruleSetType: 'Microsoft_DefaultRuleSet'
          ruleSetVersion: '2.1'
          ruleSetAction: 'Block'
          ruleGroupOverrides: [
            {
              // DICOMweb DELETE (PS3.18) is a method the API serves (admin role, checked by the app); the rule set's
              // method enforcement allows only GET, HEAD, POST and OPTIONS.
              ruleGroupName: 'METHOD-ENFORCEMENT'
              rules: [
                {
                  ruleId: '911100'
                  enabledState: 'Disabled'
                }
              ]
            }
          ]
        }
      ]
    }
  }
}

// --- endpoints ---------------------------------------------------------------------------------------------------------

resource apiEndpoint 'Microsoft.Cdn/profiles/afdEndpoints@2024-02-01' = {
  parent: profile
  name: apiEndpointName
  location: 'global'
  tags: tags
  properties: {
    enabledState: 'Enabled'
  }
}

resource primaryHooksEndpoint 'Microsoft.Cdn/profiles/afdEndpoints@2024-02-01' = {
  parent: profile
  name: primaryHooksEndpointName
  location: 'global'
  tags: tags
  properties: {
    enabledState: 'Enabled'
  }
}

resource secondaryHooksEndpoint 'Microsoft.Cdn/profiles/afdEndpoints@2024-02-01' = {
  parent: profile
  name: secondaryHooksEndpointName
  location: 'global'
  tags: tags
  properties: {
    enabledState: 'Enabled'
  }
}

resource inboxEndpoint 'Microsoft.Cdn/profiles/afdEndpoints@2024-02-01' = {
  parent: profile
  name: inboxEndpointName
  location: 'global'
  tags: tags
  properties: {
    enabledState: 'Enabled'
  }
}

resource wafOnEveryEndpoint 'Microsoft.Cdn/profiles/securityPolicies@2024-02-01' = {
  parent: profile
  name: 'waf'
  properties: {
    parameters: {
      type: 'WebApplicationFirewall'
      wafPolicy: {
        id: waf.id
      }
      associations: [
        {
          domains: [
            {
              id: apiEndpoint.id
            }
            {
              id: primaryHooksEndpoint.id
            }
            {
              id: secondaryHooksEndpoint.id
            }
            {
              id: inboxEndpoint.id
            }
          ]
          patternsToMatch: [
            '/*'
          ]
        }
      ]
    }
  }
}

// --- the API: priority routing on /api/health ------------------------------------------------------------------------

resource apiGroupsRes 'Microsoft.Cdn/profiles/originGroups@2024-02-01' = [for g in apiGroups: {
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

resource primaryOrigins 'Microsoft.Cdn/profiles/originGroups/origins@2024-02-01' = [for (g, i) in apiGroups: {
  parent: apiGroupsRes[i]
  name: 'primary'
  properties: {
    hostName: primaryApp.hostName
    originHostHeader: primaryApp.hostName
    httpPort: 80
    httpsPort: 443
    priority: 1
    weight: 1000
    // The operator's failback gate (main.bicep primaryOriginEnabled; az afd origin update --enabled-state).
    enabledState: primaryOriginEnabled ? 'Enabled' : 'Disabled'
    enforceCertificateNameCheck: true
    sharedPrivateLinkResource: primaryLink
  }
}]

resource secondaryOrigins 'Microsoft.Cdn/profiles/originGroups/origins@2024-02-01' = [for (g, i) in apiGroups: {
  parent: apiGroupsRes[i]
  name: 'secondary'
  properties: {
    hostName: secondaryApp.hostName
    originHostHeader: secondaryApp.hostName
    httpPort: 80
    httpsPort: 443
    priority: g.secondaryPriority
    weight: 1000
    enabledState: 'Enabled'
    enforceCertificateNameCheck: true
    sharedPrivateLinkResource: secondaryLink
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
              id: apiGroupsRes[1].id
            }
            forwardingProtocol: 'HttpsOnly'
          }
        }
      }
    ]
  }
}

// Only the HTTP API under /api: the runtime webhooks (/runtime/...) are reachable on the hooks endpoints only.
resource apiRoute 'Microsoft.Cdn/profiles/afdEndpoints/routes@2024-02-01' = {
  parent: apiEndpoint
  name: 'api'
  properties: {
    originGroup: {
      id: apiGroupsRes[0].id
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

// --- Event Grid webhooks: each region's subscriptions to that region's app --------------------------------------------

resource primaryHooksGroup 'Microsoft.Cdn/profiles/originGroups@2024-02-01' = {
  parent: profile
  name: 'hooks-primary'
  properties: {
    loadBalancingSettings: {
      sampleSize: 4
      successfulSamplesRequired: 3
      additionalLatencyInMilliseconds: 50
    }
    sessionAffinityState: 'Disabled'
  }
}

resource secondaryHooksGroup 'Microsoft.Cdn/profiles/originGroups@2024-02-01' = {
  parent: profile
  name: 'hooks-secondary'
  properties: {
    loadBalancingSettings: {
      sampleSize: 4
      successfulSamplesRequired: 3
      additionalLatencyInMilliseconds: 50
    }
    sessionAffinityState: 'Disabled'
  }
}

resource primaryHooksOrigin 'Microsoft.Cdn/profiles/originGroups/origins@2024-02-01' = {
  parent: primaryHooksGroup
  name: 'primary'
  properties: {
    hostName: primaryApp.hostName
    originHostHeader: primaryApp.hostName
    httpPort: 80
    httpsPort: 443
    priority: 1
    weight: 1000
    enabledState: 'Enabled'
    enforceCertificateNameCheck: true
    sharedPrivateLinkResource: primaryLink
  }
}

resource secondaryHooksOrigin 'Microsoft.Cdn/profiles/originGroups/origins@2024-02-01' = {
  parent: secondaryHooksGroup
  name: 'secondary'
  properties: {
    hostName: secondaryApp.hostName
    originHostHeader: secondaryApp.hostName
    httpPort: 80
    httpsPort: 443
    priority: 1
    weight: 1000
    enabledState: 'Enabled'
    enforceCertificateNameCheck: true
    sharedPrivateLinkResource: secondaryLink
  }
}

resource primaryHooksRoute 'Microsoft.Cdn/profiles/afdEndpoints/routes@2024-02-01' = {
  parent: primaryHooksEndpoint
  name: 'hooks'
  properties: {
    originGroup: {
      id: primaryHooksGroup.id
    }
    supportedProtocols: [
      'Https'
    ]
    patternsToMatch: [
      '/runtime/webhooks/*'
    ]
    forwardingProtocol: 'HttpsOnly'
    linkToDefaultDomain: 'Enabled'
    httpsRedirect: 'Disabled'
  }
  dependsOn: [
    primaryHooksOrigin
  ]
}

resource secondaryHooksRoute 'Microsoft.Cdn/profiles/afdEndpoints/routes@2024-02-01' = {
  parent: secondaryHooksEndpoint
  name: 'hooks'
  properties: {
    originGroup: {
      id: secondaryHooksGroup.id
    }
    supportedProtocols: [
      'Https'
    ]
    patternsToMatch: [
      '/runtime/webhooks/*'
    ]
    forwardingProtocol: 'HttpsOnly'
    linkToDefaultDomain: 'Enabled'
    httpsRedirect: 'Disabled'
  }
  dependsOn: [
    secondaryHooksOrigin
  ]
}

// --- the inbox that follows ingestRegion -------------------------------------------------------------------------------

resource inboxGroup 'Microsoft.Cdn/profiles/originGroups@2024-02-01' = {
  parent: profile
  name: 'inbox'
  properties: {
    loadBalancingSettings: {
      sampleSize: 4
      successfulSamplesRequired: 3
      additionalLatencyInMilliseconds: 50
    }
    sessionAffinityState: 'Disabled'
  }
}

resource primaryInboxOrigin 'Microsoft.Cdn/profiles/originGroups/origins@2024-02-01' = {
  parent: inboxGroup
  name: 'primary'
  properties: {
    hostName: primaryInbox.hostName
    originHostHeader: primaryInbox.hostName
    httpPort: 80
    httpsPort: 443
    priority: 1
    weight: 1000
    // Disabled while the secondary takes uploads (the runbook: az afd origin update ... --enabled-state).
    enabledState: ingestRegion == 'primary' ? 'Enabled' : 'Disabled'
    enforceCertificateNameCheck: true
    sharedPrivateLinkResource: primaryInboxLink
  }
}

resource secondaryInboxOrigin 'Microsoft.Cdn/profiles/originGroups/origins@2024-02-01' = {
  parent: inboxGroup
  name: 'secondary'
  properties: {
    hostName: secondaryInbox.hostName
    originHostHeader: secondaryInbox.hostName
    httpPort: 80
    httpsPort: 443
    priority: 2
    weight: 1000
    enabledState: 'Enabled'
    enforceCertificateNameCheck: true
    sharedPrivateLinkResource: secondaryInboxLink
  }
}

resource inboxRoute 'Microsoft.Cdn/profiles/afdEndpoints/routes@2024-02-01' = {
  parent: inboxEndpoint
  name: 'inbox'
  properties: {
    originGroup: {
      id: inboxGroup.id
    }
    supportedProtocols: [
      'Https'
    ]
    patternsToMatch: [
      '/${inboxContainer}/*'
    ]
    forwardingProtocol: 'HttpsOnly'
    linkToDefaultDomain: 'Enabled'
    httpsRedirect: 'Disabled'
  }
  dependsOn: [
    primaryInboxOrigin
    secondaryInboxOrigin
  ]
}

output apiHostName string = apiEndpoint.properties.hostName
output primaryHooksHostName string = primaryHooksEndpoint.properties.hostName
output secondaryHooksHostName string = secondaryHooksEndpoint.properties.hostName
output inboxHostName string = inboxEndpoint.properties.hostName
