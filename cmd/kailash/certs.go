package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/devcert"
)

// runCerts is `kailash certs dev`: a throwaway CA, a server certificate for
// the control plane, authz and ratelimit, and Envoy's client certificate,
// with the config lines that turn mutual TLS on. For local testing only.
func runCerts(_ context.Context, args []string, w io.Writer) error {
	if len(args) > 0 && isHelp(args[0]) {
		args = []string{"dev", "--help"} // the one subcommand's flags
	}
	if len(args) == 0 || args[0] != "dev" {
		return fmt.Errorf("certs: usage: kailash certs dev --out DIR [--node-id ID] [--hosts 127.0.0.1,localhost] [--validity 720h]")
	}
	fs := newFlagSet("certs dev")
	var out, node, hosts string
	var validity time.Duration
	fs.StringVar(&out, "out", "", "directory to write the files to (required; created 0700)")
	fs.StringVar(&node, "node-id", config.DefaultNodeID, "Envoy's node id: the client certificate's common name")
	fs.StringVar(&hosts, "hosts", "127.0.0.1,localhost", "comma-separated names and IPs of the servers' certificate")
	fs.DurationVar(&validity, "validity", 30*24*time.Hour, "lifetime of the certificates")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if out == "" || node == "" || len(splitList(hosts)) == 0 {
		return fmt.Errorf("certs dev: --out, --node-id and --hosts must not be empty")
	}
	if err := os.MkdirAll(out, 0o700); err != nil {
		return err
	}
	abs, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	ca, err := devcert.NewCA("Kailash development mTLS CA", validity)
	if err != nil {
		return err
	}
	caFile, err := ca.WriteCA(abs, "ca")
	if err != nil {
		return err
	}
	srv, err := ca.Issue(validity, splitList(hosts)...)
	if err != nil {
		return err
	}
	srvCert, srvKey, err := srv.Write(abs, "server")
	if err != nil {
		return err
	}
	cli, err := ca.IssueClient(validity, node)
	if err != nil {
		return err
	}
	cliCert, cliKey, err := cli.Write(abs, "envoy")
	if err != nil {
		return err
	}
	server := fmt.Sprintf("{cert_file: %q, key_file: %q, client_ca_file: %q}", srvCert, srvKey, caFile)
	client := fmt.Sprintf("{cert_file: %q, key_file: %q, ca_file: %q}", cliCert, cliKey, caFile)
	_, err = fmt.Fprintf(w, `Wrote a development CA, a server certificate (%s) and Envoy's client
certificate (node id %q) to %s. Not for production: the keys are unencrypted.

Add to kailash.yaml (merge into the sections you have):

envoy:
  node_id: %s
  xds_tls: %s
  authz_tls: %s
  ratelimit_tls: %s   # only with ratelimit.grpc
xds:
  tls: %s
authz:
  tls: %s
ratelimit:
  tls: %s   # only with ratelimit.grpc
`, hosts, node, abs, node, client, client, client, server, server, server)
	return err
}
