// Alerts on the metrics the app sends to Application Insights (table customMetrics). Their
// names and dimensions are a contract with the app: docs/deploy.md, "Alerts and the metrics
// they read". A rule whose metric is never sent stays silent, so the names must match exactly.

@description('Prefix of the alert rule names.')
param namePrefix string

@description('Azure region of the alert rules (that of Application Insights).')
param location string

@description('Tags for the resources.')
param tags object

@description('Name of the Application Insights component the rules query.')
param appInsightsName string

@description('Email address notified when an alert fires. Empty: no action group.')
param alertEmail string = ''

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

var metrics = {
  poisonMessages: 'mailfiler.poison_messages'
  mailboxFailures: 'mailfiler.mailbox_failures'
  credentialExpiryHours: 'mailfiler.credential_expiry_hours'
}

// One entry per rule. `measure` is the customMetrics column the rule aggregates over its
// window, per value of `dimension` (a customDimensions key), and compares with threshold.
// The metrics are OpenTelemetry gauges, which the Azure Monitor exporter sends with a value
// but no min or max: the rules aggregate `value`, not valueMin or valueMax.
var rules = [
  {
    name: 'poison-messages'
    displayName: 'Mailfiler: messages in a poison queue'
    description: 'A poison queue is not empty: a message failed every retry. See /api/health and `mailfiler poison`.'
    severity: 2
    metric: metrics.poisonMessages
    dimension: 'queue'
    measure: 'value'
    aggregation: 'Maximum'
    operator: 'GreaterThan'
    threshold: 0
    frequency: 'PT5M'
    window: 'PT15M'
  }
  {
    name: 'mailbox-failures'
    displayName: 'Mailfiler: a mailbox is failing'
    description: 'Polls or fetches of a mailbox are failing (credentials, permissions, network). See /api/health.'
    severity: 2
    metric: metrics.mailboxFailures
    dimension: 'mailbox'
    measure: 'value'
    aggregation: 'Maximum'
    operator: 'GreaterThan'
    threshold: 0
    frequency: 'PT5M'
    window: 'PT15M'
  }
  {
    name: 'credential-expiry'
    displayName: 'Mailfiler: a subscription or credential expires within 72 hours'
    description: 'A Graph subscription or the certificate a mailbox signs in with expires within 72 hours and has not been renewed. See /api/health.'
    severity: 1
    metric: metrics.credentialExpiryHours
    dimension: 'mailbox'
    measure: 'value'
    aggregation: 'Minimum'
    operator: 'LessThan'
    threshold: 72
    frequency: 'PT15M'
    window: 'PT1H'
  }
]

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: '${namePrefix}-operators'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'mailfiler'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [
  for rule in rules: {
    name: '${namePrefix}-${rule.name}'
    location: location
    tags: tags
    kind: 'LogAlert'
    properties: {
      displayName: rule.displayName
      description: rule.description
      severity: rule.severity
      enabled: true
      scopes: [
        appInsights.id
      ]
      evaluationFrequency: rule.frequency
      windowSize: rule.window
      criteria: {
        allOf: [
          {
            query: 'customMetrics | where name == "${rule.metric}" | extend ${rule.dimension} = tostring(customDimensions.${rule.dimension}) | project timestamp, ${rule.dimension}, ${rule.measure}'
            timeAggregation: rule.aggregation
            metricMeasureColumn: rule.measure
            dimensions: [
              {
                name: rule.dimension
                operator: 'Include'
                values: [
                  '*'
                ]
              }
            ]
            operator: rule.operator
            threshold: rule.threshold
            failingPeriods: {
              numberOfEvaluationPeriods: 1
              minFailingPeriodsToAlert: 1
            }
          }
        ]
      }
      // Resolve by itself once the metric is back under the threshold.
      autoMitigate: true
      actions: {
        actionGroups: empty(alertEmail) ? [] : [
          actionGroup.id
        ]
      }
    }
  }
]
