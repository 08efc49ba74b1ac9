# TaskqNode: the throwaway cluster the TAP tests share: taskq preloaded, its
# workers in database postgres (2 executors, 100 ms poll) unless a test says
# otherwise.
#
#   my $node = taskq_node('name', 'taskq.workers' => 1, restart_after_crash => 'on');
#   $primary->append_conf('postgresql.conf', taskq_conf(...));   # to init it yourself
#   ok(executors_up($node, 2), 'the executors are up');
package TaskqNode;

use strict;
use warnings;

use Exporter 'import';
use PostgreSQL::Test::Cluster;

our @EXPORT = qw(taskq_node taskq_conf executors_up);

my %defaults = (
	shared_preload_libraries => 'taskq',
	'taskq.database' => 'postgres',
	'taskq.workers' => 2,
	'taskq.poll_interval' => '100ms');

# postgresql.conf lines: the defaults, overridden and extended by %settings
sub taskq_conf
{
	my %settings = (%defaults, @_);
	return join('', map { "$_ = '$settings{$_}'\n" } sort keys %settings);
}

sub taskq_node
{
	my ($name, @settings) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', taskq_conf(@settings));
	$node->start;
	return $node;
}

# wait (bounded) until $n executors run in $db
sub executors_up
{
	my ($node, $n, $db) = @_;
	return $node->poll_query_until($db // 'postgres',
		"SELECT count(*) = $n FROM taskq.workers WHERE kind = 'executor'");
}

1;
