"""Microsoft 365 mailboxes through Microsoft Graph: auth, client, subscriptions, delta, actions.

Nothing here is imported on the webhook's path except `clientstate` (pure, stdlib only): the
validation handshake and notification intake must answer fast even on a cold start.
"""
