"""The Azure Functions entry point: create the app and register the blueprints. Nothing else."""

import azure.functions as func

from shared.functions import api, console, events, graph, health, pipeline, timers

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(health.bp)
app.register_functions(pipeline.bp)
app.register_functions(timers.bp)
app.register_functions(api.bp)
app.register_functions(events.bp)
app.register_functions(graph.bp)
app.register_functions(console.bp)
