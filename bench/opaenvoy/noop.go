package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
)

// The no-work floor: a gRPC ext_authz server (a process of its own, as the
// servers compared are) that answers every Check OK without looking at it.
// What it achieves on this machine under the same load generator is the
// most any server could: the ratios against it say how much of the
// machine's gRPC capacity the policy work leaves.

// noopEnv makes this binary run the floor server instead of the benchmark.
const noopEnv = "OPAENVOY_NOOP_ADDR"

type noopServer struct {
	authv3.UnimplementedAuthorizationServer
}

var okResponse = &authv3.CheckResponse{Status: &status.Status{Code: 0},
	HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}}}

func (noopServer) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return okResponse, nil
}

// serveNoop runs the floor server when this process was started as one.
func serveNoop() bool {
	addr := os.Getenv(noopEnv)
	if addr == "" {
		return false
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "noop:", err)
		os.Exit(1)
	}
	s := grpc.NewServer()
	authv3.RegisterAuthorizationServer(s, noopServer{})
	_ = s.Serve(ln) // until SIGTERM ends the process
	return true
}

func startNoop(string) (*proc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), noopEnv+"="+addr)
	if v := os.Getenv("BENCH_SERVER_GOMAXPROCS"); v != "" {
		cmd.Env = append(cmd.Env, "GOMAXPROCS="+v)
	}
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &proc{cmd: cmd, addr: addr, out: out}, nil
}
