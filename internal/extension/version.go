package extension

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/l5d-tunnel/l5d-tunnel/internal/cli"
)

func newVersionCmd(g *Globals) *cobra.Command {
	var clientOnly, short bool
	cmd := &cobra.Command{
		Use:   "version [flags]",
		Short: "Print the CLI's version and the version installed in the cluster",
		Long: `Print the version of linkerd-tunnel and, unless --client, the versions of l5d-tunnel
running in the current cluster (the image tags of its Deployments), or "unavailable".`,
		Example: `  linkerd tunnel version
  linkerd tunnel version --client --short`,
		Args: argsExactly(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := cmd.OutOrStdout()
			if short {
				fmt.Fprintln(w, cli.Version)
			} else {
				fmt.Fprintf(w, "Client version: %s\n", cli.Version)
			}
			if clientOnly {
				return nil
			}
			server := "unavailable"
			if c, err := g.Client(); err == nil {
				if v, err := serverVersions(cmd.Context(), c); err == nil && v != "" {
					server = v
				} else if err != nil {
					g.logger(cmd.ErrOrStderr()).Debug("server version", "error", err)
				}
			}
			if short {
				fmt.Fprintln(w, server)
			} else {
				fmt.Fprintf(w, "Server version: %s\n", server)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "Print the client version only")
	cmd.Flags().BoolVar(&short, "short", false, "Print the versions only, one a line")
	return cmd
}

// serverVersions lists the image tags of the extension's Deployments in the
// cluster, comma-separated ("" when there are none).
func serverVersions(ctx context.Context, c client.Client) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, clusterTimeout)
	defer cancel()
	var list appsv1.DeploymentList
	if err := c.List(ctx, &list, client.MatchingLabels{LabelExtension: Name}); err != nil {
		return "", err
	}
	var tags []string
	for _, d := range list.Items {
		for _, ctr := range d.Spec.Template.Spec.Containers {
			if i := strings.LastIndex(ctr.Image, ":"); i > strings.LastIndex(ctr.Image, "/") {
				tags = append(tags, ctr.Image[i+1:])
			}
		}
	}
	slices.Sort(tags)
	return strings.Join(slices.Compact(tags), ", "), nil
}
