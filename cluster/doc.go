// Package cluster will own edgegate's HA tier: the hashicorp/memberlist node,
// its delegate and the typed gossip messages (endpoint ejections, ACME
// certificates and challenge tokens, the applied snapshot hash, leader) as
// last-writer-wins records with logical clocks. It never carries routes:
// every peer builds its own from the API server.
//
// Reserved: nothing is implemented yet. It imports nothing internal; main
// passes it narrow interfaces. See the HA issue.
package cluster
