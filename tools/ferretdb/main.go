// Command ferretdb runs FerretDB v1 (a MongoDB-wire-compatible server) on its
// SQLite or PostgreSQL backend through FerretDB's embeddable API, for micropacs'
// test stack.
//
//	ferretdb --listen-addr 127.0.0.1:27018 --sqlite-url file:/abs/dir/ \
//	ferretdb --listen-addr 127.0.0.1:27018 --handler postgresql \
//	  --postgresql-url postgres://postgres@127.0.0.1:5432/ferretdb \
//	  [--listen-tls 127.0.0.1:27019 --listen-tls-cert-file server.crt --listen-tls-key-file server.key]
package main

import (
	"context"
	"flag"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen-addr", "127.0.0.1:27018", "TCP address to listen on")
	handler := flag.String("handler", "sqlite", "backend: sqlite or postgresql")
	postgresqlURL := flag.String("postgresql-url", "", "PostgreSQL URL (the database must exist)")
	sqliteURL := flag.String("sqlite-url", "file:data/", "SQLite directory URI (must end with /)")
	listenTLS := flag.String("listen-tls", "", "TLS address to listen on, beside the plain one (empty: none)")
	tlsCert := flag.String("listen-tls-cert-file", "", "PEM certificate of the TLS listener")
	tlsKey := flag.String("listen-tls-key-file", "", "PEM private key of the TLS listener")
	tlsCA := flag.String("listen-tls-ca-file", "", "PEM CA: clients must present a certificate it issued")
	flag.Parse()
	if *handler != "sqlite" && *handler != "postgresql" {
		log.Fatalf("--handler must be sqlite or postgresql, not %q", *handler)
	}
	if *handler == "postgresql" && *postgresqlURL == "" {
		log.Fatal("--handler postgresql needs --postgresql-url")
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	server, err := ferretdb.New(&ferretdb.Config{
		Listener: ferretdb.ListenerConfig{
			TCP:         *listen,
			TLS:         *listenTLS,
			TLSCertFile: *tlsCert,
			TLSKeyFile:  *tlsKey,
			TLSCAFile:   *tlsCA,
		},
		Logger:        logger,
		Handler:       *handler,
		SQLiteURL:     *sqliteURL,
		PostgreSQLURL: *postgresqlURL,
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log.Printf("FerretDB (%s) listening on %s", *handler, *listen)
	if err := server.Run(ctx); err != nil && ctx.Err() == nil {
		log.Fatal(err)
	}
}
