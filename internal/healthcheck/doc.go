// Package healthcheck is `linkerd-tunnel check`: the checks of the cloud side
// (webhook, certificates, Links) and the home side (tunnel clients), printed
// in Linkerd's check formats. Only the linkerd-tunnel root command imports it.
package healthcheck
