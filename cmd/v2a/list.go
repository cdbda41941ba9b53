package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/v2a-dr/v2a/scenarios"
)

func newListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the built-in scenarios",
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, n := range scenarios.Names() {
				fmt.Fprintln(cmd.OutOrStdout(), n)
			}
			return nil
		},
	}
}
