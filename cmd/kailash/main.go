// Command kailash is Kailash Gateway's one binary.
//
//	kailash up        -c kailash.yaml   control plane + authz + runner + a child Envoy
//	kailash xds       -c kailash.yaml   the xDS control plane alone
//	kailash authz     -c kailash.yaml   the ext_authz server alone
//	kailash authz     --policy DIR|FILE|BUNDLE.tar.gz --decision envoy/authz/allow
//	                                    drop-in replacement for opa-envoy-plugin
//	kailash policy    test|check|eval|build|replay
//	kailash runner    -c kailash.yaml   the workflow runner alone
//	kailash ratelimit -c kailash.yaml   the global rate-limit service alone
//	kailash keys      status|add|rotate -c kailash.yaml   data keys at rest
//	kailash token     --tenant T --sub S --roles a,b [--ttl 1h]
//	kailash validate  -c kailash.yaml   check config, policy and workflows offline
//	kailash translate -c kailash.yaml   print the Envoy resources the config becomes
//	kailash bootstrap -c kailash.yaml   print the Envoy bootstrap
//	kailash version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// version is set by the linker (-X main.version=...).
var version = "dev"

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout io.Writer) error
}

func commands() []command {
	return []command{
		{"up", "run the whole stack on this machine (Envoy included)", runUp},
		{"xds", "run the xDS control plane", runXDS},
		{"authz", "run the ext_authz server", runAuthz},
		{"runner", "run the workflow runner", runRunner},
		{"ratelimit", "run the global rate-limit service (envoy.service.ratelimit.v3)", runRateLimit},
		{"keys", "status, add or rotate the data keys of the runner's store", runKeys},
		{"policy", "test, check, eval, build or replay policy bundles", runPolicy},
		{"token", "mint a development bearer token", runToken},
		{"validate", "check a config, its policy bundle and workflows", runValidate},
		{"translate", "print the Envoy resources for a config", runTranslate},
		{"bootstrap", "print the Envoy bootstrap for a config", runBootstrap},
		{"certs", "write development mTLS certificates (certs dev --out DIR)", runCerts},
		{"version", "print the version", func(_ context.Context, _ []string, w io.Writer) error {
			_, err := fmt.Fprintf(w, "kailash %s (envoy %s)\n", version, envoyVersion())
			return err
		}},
	}
}

func main() {
	sandboxWorkerDispatch()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "kailash:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return errors.New("a command is required")
		}
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout)
		}
	}
	usage(os.Stderr)
	return fmt.Errorf("unknown command %q", args[0])
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Kailash Gateway: identity, policy and multi-tenancy in front of any backend, on Envoy.")
	fmt.Fprintln(w, "\nUsage: kailash <command> [flags]")
	fmt.Fprintln(w)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'kailash <command> -h' for a command's flags.")
}

// common flags of the server commands.
type serverFlags struct {
	config   string
	logLevel string
	logJSON  bool
}

func (f *serverFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.config, "c", "kailash.yaml", "config file")
	fs.StringVar(&f.config, "config", "kailash.yaml", "config file (same as -c)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&f.logJSON, "log-json", false, "log JSON lines instead of text")
}

func (f *serverFlags) logger() (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	o := &slog.HandlerOptions{Level: lv}
	if f.logJSON {
		return slog.New(slog.NewJSONHandler(os.Stderr, o)), nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, o)), nil
}

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("kailash "+name, flag.ContinueOnError)
	return fs
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
