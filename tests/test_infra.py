"""infra/ parses, and keeps the properties the deployment's security rests on.

Offline: every .bicep file is parsed with pycep-parser (no Azure, no Bicep CLI) and the parsed
tree is checked. pycep gives each file as nested dicts: `parameters`, `variables`, `resources`
(a resource's body under `config`; a loop or condition wraps it in another `config`),
`modules`, `outputs`. A reference and a string literal both come out as a plain string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from pycep import BicepParser

from shared.console.access import ADMIN, AGENT, CSRF_SETTING, READ
from shared.console.pages import BASE
from shared.core.config import GraphSettings
from shared.sources.imap.oauth import TOKEN_KEY_SETTING
from shared.store.blobs import RAW_CONTAINER
from shared.store.leases import LOCKS_CONTAINER
from shared.store.stores import QUEUES, TABLES, poison

REPO = Path(__file__).resolve().parent.parent
INFRA = REPO / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

# Built-in role definitions (ids are the same in every tenant).
BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
KEY_VAULT_SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"

STORAGE = "Microsoft.Storage/storageAccounts"
VAULT = "Microsoft.KeyVault/vaults"
COMPONENT = "Microsoft.Insights/components"

ALERT_METRICS = {
    "mailfiler.poison_messages": ("GreaterThan", 0),
    "mailfiler.mailbox_failures": ("GreaterThan", 0),
    "mailfiler.credential_expiry_hours": ("LessThan", 72),
}


@cache
def _parser() -> BicepParser:
    return BicepParser()


@cache
def parse(path: Path) -> dict[str, Any]:
    """The file as pycep's tree; raises if it does not parse."""
    return cast(dict[str, Any], _parser().parse(file_path=path))


def bicep(name: str) -> dict[str, Any]:
    return parse(INFRA / name)


# --- reading the parsed tree ------------------------------------------------------------------


def body(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource's or module's own body, under any loop or deploy condition."""
    config = resource["config"]
    while "config" in config and ("loop_type" in config or "condition" in config):
        config = config["config"]
    return cast(dict[str, Any], config)


def resources(doc: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    """Symbolic name -> resource, for the resources of one type (existing ones excluded)."""
    return {
        name: res
        for name, res in doc.get("resources", {}).items()
        if res["type"] == type_ and not res["existing"]
    }


def one(doc: dict[str, Any], type_: str) -> dict[str, Any]:
    found = list(resources(doc, type_).values())
    assert len(found) == 1, f"expected one {type_}, found {len(found)}"
    return body(found[0])


def at(obj: Any, path: str) -> Any:
    """obj['a']['b'] for path 'a.b'; KeyError names the missing part."""
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            raise KeyError(f"{path}: no {part!r}")
        obj = obj[part]
    return obj


def variable(doc: dict[str, Any], name: str) -> Any:
    return doc["variables"][name]["value"]


def param(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return cast(dict[str, Any], doc["parameters"][name])


def decorator(doc: dict[str, Any], name: str, kind: str) -> Any:
    for deco in param(doc, name)["decorators"]:
        if deco["type"] == kind:
            return deco.get("argument")
    raise KeyError(f"param {name} has no @{kind}")


def walk(obj: Any) -> Iterator[Any]:
    """Every dict, list and scalar in a parsed tree."""
    yield obj
    children = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, list) else ()
    for child in children:
        yield from walk(child)


def evaluate(doc: dict[str, Any], expr: Any, env: dict[str, Any] | None = None) -> Any:
    """The value of the few expressions the checked lists use: names of variables and loop
    items, literals, `a.b`, concat() and map() with a string lambda, and `c ? [..] : [..]`
    (both lists: every item it may hold). Anything else raises."""
    env = env or {}
    if isinstance(expr, str):
        if expr in env:
            return env[expr]
        if expr in doc.get("variables", {}):
            return evaluate(doc, variable(doc, expr), env)
        return expr
    if isinstance(expr, list):
        return [evaluate(doc, item, env) for item in expr]
    if _node(expr, "operator"):
        operator = expr["operator"]
        if operator["type"] == "property_accessor" and isinstance(
            operator["operands"]["operand_2"], str
        ):
            base = evaluate(doc, operator["operands"]["operand_1"], env)
            return evaluate(doc, base[operator["operands"]["operand_2"]], env)
        if operator["type"] == "conditional":
            branches = [operator["operands"][b] for b in ("true_value", "false_value")]
            values = [evaluate(doc, branch, env) for branch in branches]
            if all(isinstance(value, list) for value in values):
                return values[0] + values[1]
    elif _node(expr, "function"):
        kind, args = expr["function"]["type"], list(expr["function"]["parameters"].values())
        if kind == "concat":
            return [item for arg in args for item in evaluate(doc, arg, env)]
        if kind == "map" and args[1].get("type") == "lambda_expression":
            lam = args[1]["detail"]
            return [
                evaluate(doc, _substitute(lam["expression"], lam["var_1"], item), env)
                for item in evaluate(doc, args[0], env)
            ]
    elif isinstance(expr, dict):
        return {key.strip("'"): evaluate(doc, value, env) for key, value in expr.items()}
    elif isinstance(expr, int | bool) or expr is None:
        return expr
    raise ValueError(f"cannot evaluate {expr!r}")


def _node(expr: Any, kind: str) -> bool:
    """Is `expr` pycep's form of an operator or function call (not an object literal)?"""
    return isinstance(expr, dict) and list(expr) == [kind] and isinstance(expr[kind], dict)


def _substitute(expression: Any, name: str, value: str) -> Any:
    if expression == name:
        return value
    if isinstance(expression, str) and "${" in expression:
        return expression.replace("${" + name + "}", value)
    raise ValueError(f"cannot apply lambda {expression!r}")


def grants(doc: dict[str, Any], principal: str) -> set[tuple[str, str]]:
    """(role definition id, type of the resource it is scoped to) for every role assignment
    in `doc` to `principal` (the name of the parameter holding its id)."""
    types = {name: res["type"] for name, res in doc["resources"].items()}
    out: set[tuple[str, str]] = set()
    for res in resources(doc, "Microsoft.Authorization/roleAssignments").values():
        assignment = body(res)
        if at(assignment, "properties.principalId") != principal:
            continue
        envs: list[dict[str, Any]] = [{}]
        loop = res["config"].get("loop_type")
        if loop:
            item = loop["detail"]["item_name"]
            envs = [{item: v} for v in evaluate(doc, loop["detail"]["array_name"])]
        role_id = at(assignment, "properties.roleDefinitionId.function")
        assert role_id["type"] == "subscription_resource_id"
        for env in envs:
            role = evaluate(doc, role_id["parameters"]["resource_name_1"], env)
            out.add((role, types[assignment["scope"]]))
    return out


# --- the files --------------------------------------------------------------------------------


def test_infra_has_the_expected_files() -> None:
    names = {p.relative_to(INFRA).as_posix() for p in BICEP_FILES}
    assert "main.bicep" in names
    for module in bicep("main.bicep")["modules"].values():
        assert module["type"] == "local", "modules are local files (no registry at deploy time)"
        assert (INFRA / module["detail"]["path"]).is_file(), module["detail"]["path"]


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_bicep_file_parses(path: Path) -> None:
    doc = parse(path)
    assert doc.get("resources") or doc.get("modules"), f"{path.name} declares nothing"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_every_parameter_is_described_and_none_is_secret(path: Path) -> None:
    for name, spec in parse(path).get("parameters", {}).items():
        kinds = {d["type"] for d in spec["decorators"]}
        assert "description" in kinds, f"{path.name}: param {name} has no @description"
        assert "secure" not in kinds, f"{path.name}: param {name} takes a secret value"


def test_no_key_or_connection_string_anywhere() -> None:
    for path in sorted(INFRA.rglob("*")):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            for needle in ("listkeys(", "accountkey", "defaultendpointsprotocol", "sharedaccess"):
                assert needle not in text.lower(), f"{path.name} contains {needle}"
    for path in BICEP_FILES:
        for node in walk(parse(path)):
            if isinstance(node, dict):
                assert "AzureWebJobsStorage" not in node, f"{path.name}: a connection string"
                assert node.get("name") != "AzureWebJobsStorage", f"{path.name}: connection string"


# --- storage ----------------------------------------------------------------------------------


def test_storage_account_takes_tokens_only() -> None:
    props = one(bicep("app/storage.bicep"), STORAGE)["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True


def _deployed_names(type_: str) -> list[str]:
    """The names a looped storage resource of `type_` creates."""
    doc = bicep("app/storage.bicep")
    (res,) = resources(doc, type_).values()
    loop = res["config"]["loop_type"]["detail"]
    assert body(res)["name"] == loop["item_name"]
    return cast(list[str], evaluate(doc, loop["array_name"]))


def test_every_queue_of_the_code_is_declared_with_its_poison_queue() -> None:
    declared = _deployed_names("Microsoft.Storage/storageAccounts/queueServices/queues")
    for queue in QUEUES:
        assert queue in declared, f"queue {queue} is not in infra/app/storage.bicep"
        assert poison(queue) in declared, f"queue {poison(queue)} is not in storage.bicep"


def test_every_table_of_the_code_is_declared() -> None:
    declared = _deployed_names("Microsoft.Storage/storageAccounts/tableServices/tables")
    assert set(TABLES) <= set(declared), set(TABLES) - set(declared)


def test_every_container_is_declared_including_the_deployment_package() -> None:
    declared = _deployed_names("Microsoft.Storage/storageAccounts/blobServices/containers")
    assert {RAW_CONTAINER, LOCKS_CONTAINER, "deploymentContainerName"} <= set(declared)
    # The container storage.bicep creates is the one the function app deploys from.
    modules = bicep("main.bicep")["modules"]
    for module in ("storage", "app"):
        assert body(modules[module])["params"]["deploymentContainerName"] == (
            "deploymentContainerName"
        )
    deployment = one(bicep("app/function.bicep"), "Microsoft.Web/sites")
    value = at(deployment, "properties.functionAppConfig.deployment.storage.value")
    assert value.endswith("${deploymentContainerName}")


# --- Key Vault and Application Insights ------------------------------------------------------


def test_key_vault_is_rbac_only_and_cannot_be_purged() -> None:
    props = one(bicep("app/keyvault.bicep"), VAULT)["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["enableSoftDelete"] is True
    assert props["enablePurgeProtection"] is True


def test_application_insights_accepts_entra_id_only() -> None:
    props = one(bicep("app/monitoring.bicep"), COMPONENT)["properties"]
    assert props["DisableLocalAuth"] is True
    assert props["WorkspaceResourceId"]


# --- the function app -------------------------------------------------------------------------


def test_plan_is_flex_consumption() -> None:
    plan = one(bicep("app/function.bicep"), "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}


def test_site_runs_python_on_flex_consumption_from_a_container_by_identity() -> None:
    doc = bicep("app/function.bicep")
    site = one(doc, "Microsoft.Web/sites")
    assert site["kind"] == "functionapp,linux"
    config = at(site, "properties.functionAppConfig")
    assert config["runtime"]["name"] == "python"
    versions = decorator(doc, config["runtime"]["version"], "allowed")
    assert set(versions) <= {"3.11", "3.12"} and "3.11" in versions
    main = bicep("main.bicep")
    assert set(decorator(main, "pythonVersion", "allowed")) == set(versions)
    assert param(main, "pythonVersion")["default"] == "3.11"
    assert param(main, "instanceMemoryMB")["default"] == 2048
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"]["type"] == "UserAssignedIdentity"
    assert storage["authentication"]["userAssignedIdentityResourceId"] == "identityId"
    scale = config["scaleAndConcurrency"]
    assert {"instanceMemoryMB", "maximumInstanceCount"} <= set(scale)


def test_site_is_hardened() -> None:
    doc = bicep("app/function.bicep")
    site = one(doc, "Microsoft.Web/sites")
    props = site["properties"]
    assert props["httpsOnly"] is True
    assert props["siteConfig"]["minTlsVersion"] == "1.2"
    assert props["siteConfig"]["http20Enabled"] is True
    # Flex Consumption has no FTP(S) and rejects the property: FTP is closed by the policy.
    assert "ftpsState" not in props["siteConfig"]
    policies = {
        body(res)["name"]: body(res)["properties"]["allow"]
        for res in resources(doc, "Microsoft.Web/sites/basicPublishingCredentialsPolicies").values()
    }
    assert policies == {"ftp": False, "scm": False}
    assert site["identity"]["type"] == "UserAssigned"
    assert props["keyVaultReferenceIdentity"] == "identityId"


def test_site_is_the_azd_service() -> None:
    site = one(bicep("app/function.bicep"), "Microsoft.Web/sites")
    # A quoted key keeps its quotes in pycep's tree.
    assert any(
        isinstance(node, dict) and node.get("'azd-service-name'") == "api"
        for node in walk(site["tags"])
    )
    project = yaml.safe_load((REPO / "azure.yaml").read_text(encoding="utf-8"))
    assert project["name"] == "mailfiler"
    assert project["infra"] == {"provider": "bicep", "path": "infra"}
    assert project["services"]["api"] == {"project": ".", "language": "python", "host": "function"}


def test_app_settings_reach_storage_by_identity() -> None:
    doc = bicep("app/function.bicep")
    settings = variable(doc, "baseSettings")
    for service in ("blob", "queue", "table"):
        uri = settings[f"AzureWebJobsStorage__{service}ServiceUri"]
        assert at(uri, "operator.operands.operand_1") == "storage"
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["AzureWebJobsStorage__clientId"] == "identityClientId"
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == (
        "ClientId=${identityClientId};Authorization=AAD"
    )
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" in settings
    assert "MAILFILER_CONFIG" in settings
    (app_settings,) = [
        body(res)
        for res in resources(doc, "Microsoft.Web/sites/config").values()
        if body(res)["name"] == "appsettings"
    ]
    merged = at(app_settings, "properties.function")
    assert merged["type"] == "union"
    assert list(merged["parameters"].values()) == ["baseSettings", "secretReferences"]


def test_secret_settings_are_key_vault_references() -> None:
    doc = bicep("app/function.bicep")
    refs = at(variable(doc, "secretReferences"), "function")
    assert refs["type"] == "toObject"
    items, key, value = refs["parameters"].values()
    assert items == "secretSettings"
    assert key["detail"]["expression"] == key["detail"]["var_1"]
    reference = value["detail"]["expression"]
    assert reference.startswith("@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=")
    assert "toLower(replace(" in reference
    # No secret among the plain settings.
    secretish = re.compile(r"SECRET|PASSWORD|TOKEN|_KEY\b|CERTIFICATE", re.IGNORECASE)
    assert not [name for name in variable(doc, "baseSettings") if secretish.search(name)]
    # By default, the secrets the app itself names (not those of one mailbox).
    default = param(bicep("main.bicep"), "secretSettingNames")["default"].split(",")
    assert {TOKEN_KEY_SETTING, GraphSettings().client_state_secret_setting} <= set(default)


# --- roles ------------------------------------------------------------------------------------


def test_app_identity_holds_exactly_the_data_roles_it_needs() -> None:
    doc = bicep("app/roles.bicep")
    assert grants(doc, "identityPrincipalId") == {
        (BLOB_DATA_OWNER, STORAGE),
        (QUEUE_DATA_CONTRIBUTOR, STORAGE),
        (TABLE_DATA_CONTRIBUTOR, STORAGE),
        (KEY_VAULT_SECRETS_USER, VAULT),
        (METRICS_PUBLISHER, COMPONENT),
    }
    params = body(bicep("main.bicep")["modules"]["roles"])["params"]
    principal = params["identityPrincipalId"]
    assert at(principal, "operator.operands.operand_1") == "identity"


def test_operator_may_set_secrets_and_reads_data_only_when_asked() -> None:
    doc = bicep("app/roles.bicep")
    assert (KEY_VAULT_SECRETS_OFFICER, VAULT) in grants(doc, "operatorPrincipalId")
    assert param(bicep("main.bicep"), "operatorDataAccess")["default"] is False
    assert param(doc, "operatorDataAccess")["default"] is False


def test_every_role_assignment_is_scoped_to_one_resource() -> None:
    doc = bicep("app/roles.bicep")
    for name, res in resources(doc, "Microsoft.Authorization/roleAssignments").items():
        scope = body(res).get("scope")
        assert scope in doc["resources"], f"{name} is not scoped to a resource of this file"


# --- network, outputs, parameters, alerts -----------------------------------------------------


def test_vnet_integration_is_optional_and_delegated_to_flex_consumption() -> None:
    main = bicep("main.bicep")
    assert param(main, "vnetEnabled")["default"] is False
    assert main["modules"]["network"]["config"]["condition"] == "vnetEnabled"
    vnet = one(bicep("app/network.bicep"), "Microsoft.Network/virtualNetworks")
    services = [
        delegation["properties"]["serviceName"]
        for subnet in vnet["properties"]["subnets"]
        for delegation in subnet["properties"]["delegations"]
    ]
    assert services == ["Microsoft.App/environments"]


def test_outputs() -> None:
    outputs = bicep("main.bicep")["outputs"]
    for name in (
        "AZURE_FUNCTION_APP_NAME",
        "AZURE_FUNCTION_URL",
        "GRAPH_NOTIFICATION_URL",
        "GRAPH_LIFECYCLE_URL",
        "AZURE_KEY_VAULT_NAME",
        "AZURE_STORAGE_ACCOUNT_NAME",
        "AZURE_LOCATION",
        "AZURE_TENANT_ID",
    ):
        assert name in outputs, name
    assert outputs["GRAPH_NOTIFICATION_URL"]["value"].startswith("https://")
    assert outputs["GRAPH_NOTIFICATION_URL"]["value"].endswith("/api/graph/notifications")
    assert outputs["GRAPH_LIFECYCLE_URL"]["value"].endswith("/api/graph/lifecycle")


SUBSTITUTION = re.compile(r"^\$\{(?P<name>[A-Z][A-Z0-9_]*)(?:=(?P<default>[^}]*))?\}$")


def test_parameters_file_is_azd_substitutions_without_secrets() -> None:
    data = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))
    main = bicep("main.bicep")["parameters"]
    given = data["parameters"]
    assert set(given) <= set(main), set(given) - set(main)
    required = {name for name, spec in main.items() if spec["default"] is None}
    assert required <= set(given), required - set(given)
    assert given["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert given["location"]["value"] == "${AZURE_LOCATION}"
    for name, entry in given.items():
        match = SUBSTITUTION.match(entry["value"])
        assert match, f"{name}: only azd substitutions, no values"
        default = match["default"] or ""
        assert not re.search(r"[A-Za-z0-9+/=_-]{32,}", default), f"{name}: a secret-like default"
        assert not re.search(r"(?i)(password|secret|key|token)\s*[=:]", default), name


def test_alerts_read_the_documented_metrics() -> None:
    doc = bicep("app/alerts.bicep")
    rules = evaluate(doc, "rules")
    assert {rule["metric"]: (rule["operator"], rule["threshold"]) for rule in rules} == (
        ALERT_METRICS
    )
    # Gauges carry their value in `value` (valueMin and valueMax are for histograms).
    assert {rule["measure"] for rule in rules} == {"value"}
    (rule_resource,) = resources(doc, "Microsoft.Insights/scheduledQueryRules").values()
    (criterion,) = at(body(rule_resource), "properties.criteria.allOf")
    assert criterion["query"].startswith('customMetrics | where name == "${rule.metric}"')
    (scope,) = body(rule_resource)["properties"]["scopes"]
    assert at(scope, "operator.operands") == {"operand_1": "appInsights", "operand_2": "id"}
    # The app sends each metric under the same name (shared/telemetry.py today).
    sources = "\n".join(f.read_text(encoding="utf-8") for f in (REPO / "shared").rglob("*.py"))
    for metric in ALERT_METRICS:
        assert f'"{metric}"' in sources, f"no code in shared/ sends {metric}"
    guide = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert "Alerts and the metrics they read" in guide
    for metric in ALERT_METRICS:
        assert f"`{metric}`" in guide, f"docs/deploy.md does not name {metric}"


# --- access: App Service Authentication, app roles, the console's URL -------------------------


def _auth_settings() -> tuple[dict[str, Any], dict[str, Any]]:
    """The authsettingsV2 resource of function.bicep (as declared) and its body."""
    doc = bicep("app/function.bicep")
    (res,) = [
        res
        for res in resources(doc, "Microsoft.Web/sites/config").values()
        if body(res)["name"] == "authsettingsV2"
    ]
    return res, body(res)


def _routes(level: str) -> set[str]:
    """The HTTP routes of shared/functions/ registered with auth level `level` (console
    routes name it ANON)."""
    found = set()
    pattern = re.compile(
        r'@bp\.route\(route=(?:"([^"]+)"|([A-Z_]+)[^,]*),[^\n]*auth_level=([\w.]+)'
    )
    for path in (REPO / "shared" / "functions").glob("*.py"):
        for match in pattern.finditer(path.read_text(encoding="utf-8")):
            route, constant, auth = match.groups()
            if auth.rsplit(".", 1)[-1] in (level, "ANON" if level == "ANONYMOUS" else level):
                found.add(route or constant)
    return found


def test_app_service_authentication_signs_people_in_with_entra_id() -> None:
    res, auth = _auth_settings()
    # Deployed when an app registration is given (main.bicep's authClientId).
    condition = res["config"]["condition"]
    assert "authClientId" in walk(condition)
    props = auth["properties"]
    assert props["platform"]["enabled"] is True
    validation = props["globalValidation"]
    assert validation["requireAuthentication"] is True
    assert validation["unauthenticatedClientAction"] == "RedirectToLoginPage"
    assert validation["redirectToProvider"] == "azureactivedirectory"
    assert props["httpSettings"]["requireHttps"] is True
    entra = props["identityProviders"]["azureActiveDirectory"]
    assert entra["enabled"] is True
    assert entra["registration"]["clientId"] == "authClientId"
    issuer = variable(bicep("app/function.bicep"), "authIssuer")
    assert issuer.startswith("${environment().authentication.loginEndpoint}")
    assert issuer.endswith("/v2.0")
    assert entra["validation"]["allowedAudiences"] == ["api://${authClientId}", "authClientId"]
    # No token store: the app reads only the principal header.
    assert props["login"]["tokenStore"]["enabled"] is False


def test_only_what_graph_and_the_health_probe_call_is_left_anonymous() -> None:
    _, auth = _auth_settings()
    doc = bicep("app/function.bicep")
    excluded = evaluate(doc, auth["properties"]["globalValidation"]["excludedPaths"])
    assert excluded == variable(doc, "anonymousPaths")
    routes = {f"/api/{route}" for route in _routes("ANONYMOUS")}
    # Graph's two endpoints are anonymous in code (they check clientState) and excluded here.
    graph = {"/api/graph/notifications", "/api/graph/lifecycle"}
    assert graph <= routes and graph <= set(excluded)
    # The health probe keeps its function key; nothing else is left open.
    assert "health" in _routes("FUNCTION")
    assert set(excluded) == graph | {"/api/health"}
    assert not [p for p in excluded if p.startswith(("/api/console", "/api/records"))]


def test_main_passes_the_app_registration_and_keeps_the_csrf_key_in_key_vault() -> None:
    main = bicep("main.bicep")
    params = body(main["modules"]["app"])["params"]
    for name in ("authClientId", "authTenantId", "authClientSecretSetting"):
        assert params[name] == name
        assert param(main, name)["default"] == ""
        assert param(bicep("app/function.bicep"), name)["default"] == ""
    # The CSRF key is always a Key Vault reference, under the name the console reads.
    assert variable(main, "consoleCsrfSetting") == CSRF_SETTING
    merged = at(variable(main, "secretSettings"), "function")
    assert merged["type"] == "union"
    assert "consoleCsrfSetting" in walk(merged["parameters"])
    assert "authClientSecretSetting" in walk(merged["parameters"])
    assert params["secretSettings"] == "secretSettings"


def test_the_app_roles_are_the_consoles() -> None:
    roles = json.loads((INFRA / "entra" / "app-roles.json").read_text(encoding="utf-8"))
    assert [r["value"] for r in roles] == [READ, AGENT, ADMIN]
    ids = [r["id"] for r in roles]
    assert len(set(ids)) == 3
    assert all(re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", i) for i in ids)
    for role in roles:
        assert role["isEnabled"] is True and role["description"] and role["displayName"]
        assert set(role["allowedMemberTypes"]) == {"User", "Application"}


def test_azd_prints_the_consoles_url() -> None:
    outputs = bicep("main.bicep")["outputs"]
    assert (
        outputs["MAILFILER_CONSOLE_URL"]["value"] == "https://${app.outputs.defaultHostName}" + BASE
    )
    assert outputs["AUTH_REDIRECT_URI"]["value"].endswith("/.auth/login/aad/callback")
    project = yaml.safe_load((REPO / "azure.yaml").read_text(encoding="utf-8"))
    hook = project["hooks"]["postdeploy"]
    assert "${MAILFILER_CONSOLE_URL}" in hook["posix"]["run"]
    assert "$env:MAILFILER_CONSOLE_URL" in hook["windows"]["run"]
    given = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert given["authClientId"]["value"] == "${MAILFILER_AUTH_CLIENT_ID}"
