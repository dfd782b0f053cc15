package coordinator

// SetLeaderForTest makes the client forget (or assume) the leader.
func (c *Client) SetLeaderForTest(addr string) { c.setLeader(addr) }
