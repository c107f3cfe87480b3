package main

import (
	"os"

	"github.com/kailash-gw/kailash/workflow/sandbox"
)

// sandboxWorkerDispatch runs the hidden `kailash sandbox-worker`
// subcommand: the runner's code-node worker (one job on stdin, one reply
// on stdout; see workflow/sandbox/worker.go). The runner starts it with
// KAILASH_SANDBOX_WORKER=1, which the sandbox package already honours
// before main runs; this is the same loop reached by name, and it is not
// listed in the usage because nobody but the runner should start it.
func sandboxWorkerDispatch() {
	if len(os.Args) > 1 && os.Args[1] == "sandbox-worker" {
		os.Exit(sandbox.WorkerMain())
	}
}
