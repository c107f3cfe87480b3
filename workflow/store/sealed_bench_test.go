package store

import (
	"fmt"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/testenv"
)

// The store's cost of one execution as the server records it (start, three
// node results, the end) and one read back, in clear and sealed:
//
//	go test -run '^$' -bench BenchmarkExecutionRecord -benchtime 2000x ./workflow/
func BenchmarkExecutionRecord(b *testing.B) {
	input := map[string]any{"ssn": "123-45-6789", "order": 42.0, "items": []any{"a", "b", "c"}, "note": string(make([]byte, 512))}
	backends := map[string]func(b *testing.B, o StoreOptions) Store{
		"sqlite": func(b *testing.B, o StoreOptions) Store {
			st, err := OpenStoreWith(b.Context(), b.TempDir(), o)
			if err != nil {
				b.Fatal(err)
			}
			return st
		},
	}
	if !testing.Short() {
		pg := testenv.StartPostgres(b)
		backends["postgres"] = func(b *testing.B, o StoreOptions) Store {
			st, err := OpenPostgresStoreWith(b.Context(), pg.DSN, o)
			if err != nil {
				b.Fatal(err)
			}
			return st
		}
	}
	for _, backend := range []string{"sqlite", "postgres"} {
		open, ok := backends[backend]
		if !ok {
			continue
		}
		for _, mode := range []string{"clear", "sealed"} {
			b.Run(backend+"/"+mode, func(b *testing.B) {
				o := StoreOptions{}
				if mode == "sealed" {
					o.Keys = fixedRing(b, "k1", testKey(b, "k1"))
				}
				st := open(b, o)
				defer st.Close()
				ctx := b.Context()
				tenant := fmt.Sprintf("bench-%s-%d", mode, time.Now().UnixNano()%1e6)
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					id := fmt.Sprintf("%s-%d", mode, i)
					now := time.Now().UTC()
					if err := st.StartExecution(ctx, &ExecutionRecord{ID: id, Workflow: "w", Tenant: tenant, User: "alice", Input: input, CreatedAt: now.Format(time.RFC3339Nano)}); err != nil {
						b.Fatal(err)
					}
					for _, n := range []string{"a", "b", "c"} {
						if err := st.RecordNode(ctx, tenant, id, NodeRun{Node: n, Type: "transform", Status: "completed", Output: input, Started: now, Finished: now}); err != nil {
							b.Fatal(err)
						}
					}
					if err := st.FinishExecution(ctx, tenant, id, StatusCompleted, input, ""); err != nil {
						b.Fatal(err)
					}
					if _, err := st.GetExecution(ctx, tenant, id); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
