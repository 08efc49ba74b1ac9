------------------------------------------------------------------------------
-- Tenants (issue 23): who a job is for, and each tenant's weight
------------------------------------------------------------------------------

-- A job's tenant (e.g. a customer), set at submit; NULL: none.  Claims are
-- to share a queue's priority between tenants by weight.
ALTER TABLE taskq.jobs ADD COLUMN tenant text;

-- Weights set by an admin; a tenant without a row weighs 1.
CREATE TABLE taskq.tenants (
    name       text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 200),
    weight     float8 NOT NULL CHECK (weight > 0 AND weight <= 1000000),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Set a tenant's weight (its share against others of weight 1); NULL puts
-- it back to the default, 1.  Admin-only: a tenant's own roles must not
-- raise their share.
CREATE FUNCTION taskq.configure_tenant(tenant text, weight float8 DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM taskq._require_admin('configure a tenant');
    PERFORM taskq._check_name('tenant', tenant);
    IF weight IS NULL THEN
        DELETE FROM taskq.tenants t WHERE t.name = configure_tenant.tenant;
        RETURN;
    END IF;
    -- (NaN > 0 holds for float8: refused by name)
    IF weight <= 0 OR weight = 'NaN' THEN
        RAISE EXCEPTION 'weight must be positive, got %', weight
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF weight > 1000000 THEN
        RAISE EXCEPTION 'weight must be at most 1000000, got %', weight
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO taskq.tenants AS t (name, weight) VALUES (tenant, weight)
    ON CONFLICT (name) DO UPDATE SET weight = excluded.weight, updated_at = now();
END
$$;
