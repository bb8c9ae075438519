package channellayer

// Stats implements Layer.
func (l *Memory) Stats() Stats {
	h := l.HistoryStats()
	return Stats{Local: l.reg.Stats(), History: &h}
}

// Stats implements Layer. Events are the fields of RedisStats.
func (l *Redis) Stats() Stats { return Stats{Local: l.reg.Stats(), Events: l.events()} }

// Stats implements Layer. Events are the fields of RedisStats.
func (l *RedisCluster) Stats() Stats { return Stats{Local: l.reg.Stats(), Events: l.events()} }
