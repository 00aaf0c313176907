package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/icws/icws/identity"
	"github.com/icws/icws/internal/config"
)

func identityCommand() command {
	return configured("identity", "print the gateway principal (creates the key file if it is missing)",
		func(_ context.Context, a *app, cfg *config.Common, logger *slog.Logger, _ []string) error {
			path := cfg.IdentityPath()
			// LoadOrCreate logs a key it creates.
			id, _, err := identity.LoadOrCreate(path, logger.With("command", "identity"))
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, id.Sender().String())
			return nil
		})
}
