// The API reference: Swagger UI over /api/openapi.json, with the dashboard's token (if signed in) for try-it-out.
(function () {
  const token = sessionStorage.getItem("taskmesh.token");
  const ui = window.SwaggerUIBundle({
    url: "/api/openapi.json",
    dom_id: "#reference",
    deepLinking: true,
    tryItOutEnabled: false,
    requestInterceptor: (request) => {
      if (token && !request.headers.Authorization) request.headers.Authorization = `Bearer ${token}`;
      return request;
    },
    responseInterceptor: (response) => {
      if (response.url.endsWith("/api/openapi.json") && response.status === 401) {
        document.getElementById("reference-note").textContent =
          "This gateway needs a token: sign in on the dashboard in this tab first.";
      }
      return response;
    },
  });
  if (token) ui.preauthorizeApiKey("bearer", token);
})();
