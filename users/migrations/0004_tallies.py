"""Signups and welcome emails counted per mode by triggers, in the very transactions that
write them (dashboard.tallies): the dashboard sums a few rows instead of counting a year."""

from django.db import migrations

FORWARD = """
CREATE FUNCTION users_signup_tally() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' AND NEW.signup_mode <> '' THEN
        INSERT INTO dashboard_tally (name, delta) VALUES ('signups.' || NEW.signup_mode, 1);
    ELSIF TG_OP = 'DELETE' AND OLD.signup_mode <> '' THEN
        INSERT INTO dashboard_tally (name, delta) VALUES ('signups.' || OLD.signup_mode, -1);
    ELSIF TG_OP = 'UPDATE' AND OLD.signup_mode IS DISTINCT FROM NEW.signup_mode THEN
        IF OLD.signup_mode <> '' THEN
            INSERT INTO dashboard_tally (name, delta) VALUES ('signups.' || OLD.signup_mode, -1);
        END IF;
        IF NEW.signup_mode <> '' THEN
            INSERT INTO dashboard_tally (name, delta) VALUES ('signups.' || NEW.signup_mode, 1);
        END IF;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER users_signup_tally AFTER INSERT OR DELETE OR UPDATE OF signup_mode ON users_user
    FOR EACH ROW EXECUTE FUNCTION users_signup_tally();

-- every email sent, ever: pruning the ledger (RETAIN_EMAIL_LEDGER_DAYS) does not uncount it
CREATE FUNCTION users_email_tally() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO dashboard_tally (name, delta)
        SELECT 'welcome_emails.' || signup_mode, 1 FROM users_user
        WHERE id = NEW.user_id AND signup_mode <> '';
    RETURN NULL;
END $$;
CREATE TRIGGER users_email_tally AFTER INSERT ON users_emailsend
    FOR EACH ROW EXECUTE FUNCTION users_email_tally();

INSERT INTO dashboard_tally (name, delta)
    SELECT 'signups.' || signup_mode, count(*) FROM users_user
    WHERE signup_mode <> '' GROUP BY signup_mode;
INSERT INTO dashboard_tally (name, delta)
    SELECT 'welcome_emails.' || u.signup_mode, count(*)
    FROM users_emailsend e JOIN users_user u ON u.id = e.user_id
    WHERE u.signup_mode <> '' GROUP BY u.signup_mode;
"""

BACKWARD = """
DROP TRIGGER users_email_tally ON users_emailsend;
DROP FUNCTION users_email_tally();
DROP TRIGGER users_signup_tally ON users_user;
DROP FUNCTION users_signup_tally();
DELETE FROM dashboard_tally WHERE name LIKE 'signups.%' OR name LIKE 'welcome_emails.%';
"""


class Migration(migrations.Migration):
    dependencies = [
        ("users", "0003_database_clock"),
        ("dashboard", "0003_tallies_and_audits"),
    ]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
