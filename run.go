package main

import (
	"context"
	"log/slog"

	"github.com/edgegate/edgegate/config"
)

// run is implemented by the wiring change; placeholder so main builds.
func run(ctx context.Context, cfg *config.Config, logger *slog.Logger) error {
	<-ctx.Done()
	return nil
}
